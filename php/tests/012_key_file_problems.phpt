--TEST--
a missing or short key file: one clear warning, the session is still stored locally
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$short = tempnam(sys_get_temp_dir(), 'memcast-key');
file_put_contents($short, "short\n");
foreach (['/nonexistent/memcast.key', $short] as $key_file) {
    echo request([
        'session.save_path' => "127.0.0.1:{$mc['port']}",
        'memcast.publish' => 'tcp://127.0.0.1:1',
        'memcast.key_file' => $key_file,
    ], '
        session_start(); $_SESSION["x"] = 1; $id = session_id(); var_dump(session_write_close());
        session_id($id); session_start(); var_dump($_SESSION["x"]); session_write_close();
    ');
}
unlink($short);
// Each frame not published for want of a key (a write and a touch per
// request) is counted for memcastd.
var_dump(mc_get($mc['port'], 'memcast:php:publish_failed:no_key'));
?>
--EXPECTF--
Warning: session_start(): memcast: key file /nonexistent/memcast.key: cannot read it: No such file or directory (os error 2): sessions are stored locally, unsealed, and not replicated in Command line code on line 2
bool(true)
int(1)

Warning: session_start(): memcast: key file %s: holds 5 bytes of key, at least 32 are needed %s: sessions are stored locally, unsealed, and not replicated in Command line code on line 2
bool(true)
int(1)
string(1) "4"
