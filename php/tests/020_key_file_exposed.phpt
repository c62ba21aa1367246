--TEST--
a key file every user can read: one warning per process, sessions still stored and published
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$key = tempnam(sys_get_temp_dir(), 'memcast-key');
file_put_contents($key, str_repeat('k', 40));
chmod($key, 0644);
echo request([
    'session.save_path' => "127.0.0.1:{$mc['port']}",
    'memcast.publish' => 'ipc://' . sys_get_temp_dir() . '/memcast-exposed-' . getmypid() . '.sock',
    'memcast.key_file' => $key,
    'memcast.relay_timeout_ms' => 5,
], '
    for ($i = 0; $i < 3; $i++) {
        session_id("exposedkey0000000000000000000" . $i);
        session_start();
        $_SESSION["i"] = $i;
        @session_write_close();
        echo "cycle $i\n";
    }
    session_id("exposedkey00000000000000000009");
    session_start();
    echo "after\n";
');
unlink($key);
?>
--EXPECTF--
Warning: session_start(): memcast: key file %s: mode 0644 lets every user on this host read the cluster key; chmod 640 or 600 in Command line code on line %d
cycle 0
cycle 1
cycle 2
after
