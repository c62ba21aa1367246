--TEST--
per-process state persists: many session cycles in one process use one memcached connection
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$mc = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$mc['port']}");
$before = mc_stat($mc['port'], 'total_connections');
for ($i = 0; $i < 20; $i++) {
    session_start();
    $_SESSION['i'] = $i;
    session_write_close();
    session_id('');
}
// One connection for all twenty requests, plus the one this stat reads over.
var_dump(mc_stat($mc['port'], 'total_connections') - $before);
?>
--EXPECT--
int(2)
