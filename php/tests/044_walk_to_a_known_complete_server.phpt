--TEST--
past a server not known complete the read asks every server: the newest copy wins, and every server that missed it or held an older one gets it back
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$a = mc_start();
$b = mc_start();
$c = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$a['port']}, 127.0.0.1:{$b['port']}, 127.0.0.1:{$c['port']}");

function n_on(int $port, string $id): ?string {
    $raw = mc_get($port, "memcast.sess.$id");
    return $raw !== null && preg_match('/n\|i:(\d+);/', $raw, $m) ? $m[1] : null;
}

session_start();
$_SESSION['n'] = 1;
$id = session_id();
session_write_close();
$older = mc_get($a['port'], "memcast.sess.$id");
session_id($id);
session_start();
$_SESSION['n'] = 2;
session_write_close();
$newer = mc_get($a['port'], "memcast.sess.$id");

// A restarted (empty, not vouched for), B refilled from a peer that was
// behind (older, not vouched for), C known complete (newer).
mc_raw($a['port'], "delete memcast.sess.$id");
mc_raw($a['port'], 'delete memcast:warm');
mc_raw($b['port'], "set memcast.sess.$id 0 600 " . strlen($older) . "\r\n" . $older);
mc_raw($b['port'], 'delete memcast:warm');
mc_raw($c['port'], "set memcast.sess.$id 0 600 " . strlen($newer) . "\r\n" . $newer);

session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['n']);
// read_and_close leaves the repair to a read with the session's lifetime:
session_id($id);
session_start();
var_dump($_SESSION['n']);
session_abort();
var_dump(n_on($a['port'], $id), n_on($b['port'], $id), n_on($c['port'], $id));

// None known complete: every server is asked and the newest copy wins.
mc_raw($c['port'], 'delete memcast:warm');
mc_raw($b['port'], "set memcast.sess.$id 0 600 " . strlen($older) . "\r\n" . $older);
mc_raw($a['port'], "set memcast.sess.$id 0 600 " . strlen($older) . "\r\n" . $older);
session_id($id);
session_start(['read_and_close' => true]);
var_dump($_SESSION['n']);
echo "done\n";
?>
--EXPECT--
int(2)
int(2)
string(1) "2"
string(1) "2"
string(1) "2"
int(2)
done
