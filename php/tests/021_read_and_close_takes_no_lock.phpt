--TEST--
session_start(['read_and_close' => true]) takes no lock: it reads a session another request holds locked, at once
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
$id = 'readonly00000000000000000000000';
echo request($ini, 'session_id("' . $id . '"); session_start(); $_SESSION["v"] = "stored";');
$holder = start_request($ini, 'session_id("' . $id . '"); session_start(); sleep(3); echo "holder done at ", microtime(true), "\n";');
usleep(300000);
// A locking read cannot have it; a read-only one can, and returns the data.
echo request(array_merge($ini, ['memcast.lock_retries' => 2, 'memcast.lock_wait_max' => 20]),
    'session_id("' . $id . '"); var_dump(@session_start());');
echo request($ini, 'session_id("' . $id . '"); var_dump(session_start(["read_and_close" => true]), $_SESSION["v"]); echo "reader done at ", microtime(true), "\n";');
$out = finish($holder);
echo preg_replace('/[\d.]+$/m', 'T', $out);
?>
--EXPECTF--
bool(false)
bool(true)
string(6) "stored"
reader done at %f
holder done at T
