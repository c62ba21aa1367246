--TEST--
a hit on a memcached not known complete is checked on the next server: an older copy there (put back by a refill) loses to the newer one, which is read and written back
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$local = mc_start();
$next = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$local['port']}, 127.0.0.1:{$next['port']}");

session_start();
$_SESSION['n'] = 1;
$id = session_id();
session_write_close();
$older = mc_get($local['port'], "memcast.sess.$id");
session_id($id);
session_start();
$_SESSION['n'] = 2;
session_write_close();
$newer = mc_get($local['port'], "memcast.sess.$id");
// The local memcached lost the newer write (restarted or evicted) and a
// refill put the older one back; the next server holds the newer one.
mc_raw($next['port'], "set memcast.sess.$id 0 600 " . strlen($newer) . "\r\n" . $newer);
mc_raw($local['port'], "set memcast.sess.$id 0 600 " . strlen($older) . "\r\n" . $older);

// Known complete (memcastd's sentinel): the local hit is used as it is.
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['n']);

// Not known complete: the newer copy wins and is written back.
mc_raw($local['port'], 'delete memcast:warm');
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['n']);
var_dump(mc_get($local['port'], "memcast.sess.$id") === $newer);

// A read-modify-write from there builds on the newer session.
session_id($id);
session_start();
$_SESSION['n']++;
var_dump(session_write_close());
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['n']);

ob_start(); phpinfo(INFO_MODULES); $info = ob_get_clean();
preg_match('/Of those, newer on the next server \(read there\) => (\d+)/', $info, $m);
echo "stale hits replaced=", $m[1], "\n";
?>
--EXPECT--
int(1)
int(2)
bool(true)
bool(true)
int(3)
stale hits replaced=1
