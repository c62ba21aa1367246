--TEST--
a memcached that restarted (it closed the connection, then refused for a moment) takes writes again within a request or two, not after memcast.retry_interval: writes sent elsewhere meanwhile would leave it holding older sessions
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$local = mc_start();
$next = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$local['port']}, 127.0.0.1:{$next['port']}");
ini_set('memcast.retry_interval', '5');
ini_set('display_errors', 1);

function n_on(int $port, string $id): ?string {
    $raw = mc_get($port, "memcast.sess.$id");
    return $raw !== null && preg_match('/n\|i:(\d+);/', $raw, $m) ? $m[1] : null;
}

// One long-lived process (a php-fpm worker).
session_start();
$_SESSION['n'] = 1;
$id = session_id();
session_write_close();
// memcastd copied it to the next server.
$raw = mc_get($local['port'], "memcast.sess.$id");
mc_raw($next['port'], "set memcast.sess.$id 0 600 " . strlen($raw) . "\r\n" . $raw);

$local = mc_restart($local);
// This request finds its connection closed: it is served by the next server.
session_id($id);
session_start();
$_SESSION['n']++;
var_dump(session_write_close());
var_dump(n_on($next['port'], $id));

// A moment later (not 5 s): the restarted memcached is asked again. It is
// not known complete, so its miss is confirmed on the next server, and
// the write lands in it again.
usleep(200000);
session_id($id);
session_start();
var_dump($_SESSION['n']);
$_SESSION['n']++;
var_dump(session_write_close());
var_dump(n_on($local['port'], $id));
echo "done\n";
?>
--EXPECT--
bool(true)
string(1) "2"
int(2)
bool(true)
string(1) "3"
done
