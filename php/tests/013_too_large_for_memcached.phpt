--TEST--
a session larger than memcached's item size: one warning, session_write_close() false, nothing truncated
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start(); // output must not count as sent headers
$mc = mc_start(['-I', '1m']);
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$mc['port']}");
session_start();
$id = session_id();
$_SESSION['blob'] = str_repeat('x', 2 * 1024 * 1024);
var_dump(session_write_close());
var_dump(mc_get($mc['port'], "memcast.sess.$id"));
session_id($id);
session_start();
$_SESSION['small'] = 1;
var_dump(session_write_close());
?>
--EXPECTF--
Warning: session_write_close(): memcast: cannot store session: no memcached server accepted it (tried memcached 127.0.0.1:%d: object too large for cache) in %s on line %d
bool(false)
NULL
bool(true)
