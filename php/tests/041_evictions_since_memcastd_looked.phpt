--TEST--
a miss on a memcached that evicted since its memcastd last looked is not trusted: the warm sentinel carries the eviction count it vouched at, and PHP checks memcached's own count before trusting a miss
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
// The local memcached is small: it evicts. The next server holds everything.
$local = mc_start(['-m', '8', '-I', '1m']);
$next = mc_start();
$path = "127.0.0.1:{$local['port']}, 127.0.0.1:{$next['port']}";
$ini = ['session.save_path' => $path];

// A session both servers hold (memcastd replicated it), as large as the
// entries that will push it out (memcached evicts within a size class).
// (Never read from the local memcached: a read would keep it from eviction.)
$out = request(['session.save_path' => "127.0.0.1:{$next['port']}"], 'session_start(); $_SESSION["user"] = "alice"; $_SESSION["pad"] = str_repeat("p", 1600); echo session_id(); session_write_close();');
$id = trim($out);
$key = "memcast.sess.$id";
$raw = mc_get($next['port'], $key);
mc_raw($local['port'], "set $key 0 600 " . strlen($raw) . "\r\n" . $raw);

// memcastd's last look: complete, with the eviction count it saw then.
function vouch(int $port): void {
    $v = '1700000000000 evictions=' . mc_stat($port, 'evictions');
    mc_raw($port, "set memcast:warm 0 0 " . strlen($v) . "\r\n$v");
}
vouch($local['port']);

echo "-- evictions begin before memcastd looks again: the session is gone from the local memcached\n";
$c = stream_socket_client("tcp://127.0.0.1:{$local['port']}");
$filler = str_repeat('f', 1600);
for ($i = 0; $i < 12000; $i++) {
    fwrite($c, "set filler$i 0 0 1600 noreply\r\n$filler\r\n");
}
fwrite($c, "mn\r\n");
fgets($c);
fclose($c);
var_dump(mc_stat($local['port'], 'evictions') > 0, mc_get($local['port'], $key), mc_get($local['port'], 'memcast:warm') !== null);

echo "-- the sentinel is still there, but the miss is confirmed on the next server, which has it\n";
echo request($ini, "session_id('$id'); session_start(); var_dump(\$_SESSION['user'] ?? null); \$_SESSION['n'] = 1; var_dump(session_write_close());");
var_dump(str_contains(mc_get($local['port'], $key), 'n|i:1;'));

echo "-- vouched at the current count: a miss there is trusted (the next server is not asked)\n";
vouch($local['port']);
$gets = mc_stat($next['port'], 'cmd_get');
echo request($ini, "session_id('newafterthelook0123456789ab'); session_start(); var_dump(\$_SESSION); \$_SESSION['fresh'] = 1; var_dump(session_write_close());");
var_dump(mc_stat($next['port'], 'cmd_get') - $gets);
?>
--EXPECT--
-- evictions begin before memcastd looks again: the session is gone from the local memcached
bool(true)
NULL
bool(true)
-- the sentinel is still there, but the miss is confirmed on the next server, which has it
string(5) "alice"
bool(true)
bool(true)
-- vouched at the current count: a miss there is trusted (the next server is not asked)
array(0) {
}
bool(true)
int(0)
