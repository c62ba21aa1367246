--TEST--
a miss on a cold memcached (no warm sentinel) asks the next server and writes the hit back; a warm miss is a miss
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$local = mc_start();
$next = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$local['port']}, 127.0.0.1:{$next['port']}");

// A session that only the next server holds (the local one restarted).
session_start();
$_SESSION['user'] = 'alice|admin';
$id = session_id();
session_write_close();
$raw = mc_get($local['port'], "memcast.sess.$id");
mc_raw($next['port'], "set memcast.sess.$id 0 600 " . strlen($raw) . "\r\n" . $raw);
mc_raw($local['port'], "delete memcast.sess.$id");

// Warm local server: a miss is a miss, the next server is not asked.
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION);

// Cold local server: the next server answers, and the value is written back.
mc_raw($local['port'], 'delete memcast:warm');
$gets = mc_stat($next['port'], 'cmd_get');
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['user']);
// One round trip to the next server: the session and its warm sentinel (two keys).
var_dump(mc_stat($next['port'], 'cmd_get') - $gets);
var_dump(mc_get($local['port'], "memcast.sess.$id") === $raw);

// A hit on the cold server is checked on the next server (one round trip,
// two keys again): a refill may have put back an older copy (042).
$gets = mc_stat($next['port'], 'cmd_get');
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['user'], mc_stat($next['port'], 'cmd_get') - $gets);

ob_start(); phpinfo(INFO_MODULES); $info = ob_get_clean();
preg_match('/Read-repairs => (\d+)/', $info, $m);
echo "read-repairs=", $m[1], "\n";
?>
--EXPECT--
array(0) {
}
string(11) "alice|admin"
int(2)
bool(true)
string(11) "alice|admin"
int(2)
read-repairs=1
