--TEST--
host relay absent: the write is stored locally, session_write_close() true, the frame is dropped and counted (phpinfo, and in the local memcached for memcastd's /metrics), one warning, no hang
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$key = tempnam(sys_get_temp_dir(), 'memcast-key');
file_put_contents($key, str_repeat('k', 40));
$sock = sys_get_temp_dir() . '/memcast-no-daemon-' . getmypid() . '.sock';
echo request([
    'session.save_path' => "127.0.0.1:{$mc['port']}",
    'memcast.publish' => "ipc://$sock",
    'memcast.key_file' => $key,
    'memcast.relay_timeout_ms' => 30,
    // Unsealed, so the stored session is found under its plain key.
    'memcast.seal' => 0,
], '
    $t = microtime(true);
    for ($i = 0; $i < 5; $i++) {
        session_id("relayabsent0000000000000000000" . $i . "0");
        session_start();
        $_SESSION["i"] = $i;
        var_dump(session_write_close());
    }
    // Five bounded waits, far from a hang.
    var_dump(microtime(true) - $t < 5);
    ob_start(); phpinfo(INFO_MODULES); $info = ob_get_clean();
    preg_match("/Publish drops => (\d+)/", $info, $m);
    echo "drops=", $m[1], "\n";
');
var_dump(mc_get($mc['port'], 'memcast.sess.relayabsent0000000000000000000' . '4' . '0') !== null);
// Counted where this host's memcastd reads it, even with no memcastd running.
var_dump(mc_get($mc['port'], 'memcast:php:publish_failed:not_taken'));
unlink($key);
?>
--EXPECTF--
Warning: session_write_close(): memcast: ipc://%s did not take the frame within 30 ms: frame dropped (the session is stored locally and is sent again once the publisher takes frames; 1 frames dropped by this process so far) in Command line code on line %d
bool(true)
bool(true)
bool(true)
bool(true)
bool(true)
bool(true)
drops=5
bool(true)
string(1) "5"
