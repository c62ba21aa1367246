--TEST--
a write no server accepts: one warning naming the servers, and session_write_close() returns false
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start(); // output must not count as sent headers
$a = mc_start();
$b = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$a['port']}, 127.0.0.1:{$b['port']}");
var_dump(session_start());
$_SESSION['order'] = 'paid';
mc_stop($a);
mc_stop($b);
$result = session_write_close();
var_dump($result);
echo "still running\n";
?>
--EXPECTF--
bool(true)

Warning: session_write_close(): memcast: cannot store session: no memcached server accepted it (tried memcached 127.0.0.1:%d: %s; memcached 127.0.0.1:%d: %s) in %s on line %d
bool(false)
still running
