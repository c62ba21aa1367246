--TEST--
read_and_close and session_abort release the lock at once; an expired lock taken by another request is never released by its first owner; a lock not had in time is one warning and false
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
$id = 'lockowner0000000000000000000000';
$stamp = 'echo "done at ", microtime(true), "\n";';

// read_and_close: the second request is not held up by the first's sleep.
$a = start_request($ini, 'session_id("' . $id . '"); session_start(["read_and_close" => true]); sleep(2); ' . $stamp);
usleep(300000);
$b = request($ini, 'session_id("' . $id . '"); session_start(); ' . $stamp);
$a = finish($a);
preg_match('/done at ([\d.]+)/', $a, $ta); preg_match('/done at ([\d.]+)/', $b, $tb);
var_dump($tb[1] < $ta[1]);

// session_abort: likewise.
$a = start_request($ini, 'session_id("' . $id . '"); session_start(); session_abort(); sleep(2); ' . $stamp);
usleep(300000);
$b = request($ini, 'session_id("' . $id . '"); session_start(); ' . $stamp);
$a = finish($a);
preg_match('/done at ([\d.]+)/', $a, $ta); preg_match('/done at ([\d.]+)/', $b, $tb);
var_dump($tb[1] < $ta[1]);

// Ownership: A's lock expires (1 s) while A sleeps; B takes it and holds it.
// When A ends, its release must leave B's lock alone: C, arriving after A
// ended and before B, cannot lock.
$short = array_merge($ini, ['memcast.lock_expire' => 1]);
$a = start_request($short, 'session_id("' . $id . '"); session_start(); sleep(2); $_SESSION["a"] = 1;');
usleep(200000);
$b = start_request(array_merge($ini, ['memcast.lock_expire' => 10]), 'session_id("' . $id . '"); var_dump(session_start()); sleep(4);');
echo finish($a);
echo request(array_merge($ini, ['memcast.lock_retries' => 3, 'memcast.lock_wait_min' => 10, 'memcast.lock_wait_max' => 20]),
    'session_id("' . $id . '"); var_dump(session_start());');
echo finish($b);
?>
--EXPECTF--
bool(true)
bool(true)

Warning: session_start(): memcast: cannot lock session: another request of this session held it for %d ms (4 tries; memcast.lock_retries, memcast.lock_wait_max) in Command line code on line %d

Warning: session_start(): Failed to read session data: memcast (path: 127.0.0.1:%d) in Command line code on line %d
bool(false)
bool(true)
