--TEST--
memcast.max_session_size: a larger session gets one warning, session_write_close() false, the previous version kept whole
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$mc = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$mc['port']}");
ini_set('memcast.max_session_size', '64K');
session_start();
$id = session_id();
$_SESSION['small'] = str_repeat('s', 1000);
var_dump(session_write_close());
$before = mc_get($mc['port'], "memcast.sess.$id");
session_id($id);
session_start();
$_SESSION['big'] = str_repeat('b', 100 * 1024);
var_dump(session_write_close());
var_dump(mc_get($mc['port'], "memcast.sess.$id") === $before);
session_id($id);
session_start();
var_dump(isset($_SESSION['big']), strlen($_SESSION['small']));
// Exactly at the limit is still stored.
$_SESSION = ['x' => str_repeat('y', 64 * 1024 - strlen('x|s:65523:"";'))];
var_dump(strlen(session_encode()));
var_dump(session_write_close());
?>
--EXPECTF--
bool(true)

Warning: session_write_close(): memcast: session data of 10%d bytes is over memcast.max_session_size (65536 bytes): not stored, the previous version is kept in %s on line %d
bool(false)
bool(true)
bool(false)
int(1000)
int(65536)
bool(true)
