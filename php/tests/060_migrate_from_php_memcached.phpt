--TEST--
memcast.migrate_from: sessions php-memcached and pecl-memcache stored (their keys, their raw values, on any server of the pool) are read, and the next write stores them in memcast's format as a write after a read; memcast's own value wins; destroy removes both; strict mode keeps the id
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$a = mc_start();
$b = mc_start();
$base = ['session.save_path' => "127.0.0.1:{$a['port']}, 127.0.0.1:{$b['port']}"];
$on = $base + ['memcast.migrate_from' => 'memcached'];
$id = fn(string $n) => str_pad($n, 32, '0');
// As php-memcached stores a session: key memc.sess.key.<id>, the session
// module's encoding as is, flags 0, on whichever server its hashing chose
// (here the second one, which memcast reads only after the first).
$legacy = fn(string $sid, string $data, ?array $mc = null) => mc_set_raw(($mc ?? $b)['port'], "memc.sess.key.$sid", $data, 0, 1440);
$show = 'echo json_encode($_SESSION), "\n";';

echo "-- off: not read\n";
$legacy($id('alice'), 'user|s:5:"alice";n|i:1;');
echo request($base, 'session_id("' . $id('alice') . '"); session_start(["read_and_close" => true]); ' . $show);

echo "-- on: read; the write stores memcast's format, not as a create\n";
echo request($on, 'session_id("' . $id('alice') . '"); session_start(); ' . $show . ' $_SESSION["n"]++;');
$raw = mc_get($a['port'], 'memcast.sess.' . $id('alice'));
var_dump(substr($raw, 0, 2), ord($raw[3]), substr($raw, 24));
echo "legacy key left: ", var_export(mc_has($b['port'], 'memc.sess.key.' . $id('alice')), true), "\n";
echo request($on, 'session_id("' . $id('alice') . '"); session_start(); ' . $show);

echo "-- both exist: memcast's own wins\n";
echo request($base, 'session_id("' . $id('both') . '"); session_start(); $_SESSION["v"] = "memcast";');
$legacy($id('both'), 'v|s:6:"legacy";');
echo request($on, 'session_id("' . $id('both') . '"); session_start(); ' . $show);

echo "-- destroy removes both (php-memcached's replicas too)\n";
$legacy($id('gone'), 'x|i:1;');
$legacy($id('gone'), 'x|i:1;', $a);
echo request($on, 'session_id("' . $id('gone') . '"); session_start(); ' . $show . ' var_dump(session_destroy());');
var_dump(mc_has($a['port'], 'memc.sess.key.' . $id('gone')), mc_has($b['port'], 'memc.sess.key.' . $id('gone')));
echo request($on, 'session_id("' . $id('gone') . '"); session_start(["read_and_close" => true]); ' . $show);

echo "-- strict mode keeps an id only php-memcached holds (and replaces it when off)\n";
$legacy($id('strict'), 's|i:5;');
echo request($on + ['session.use_strict_mode' => 1], 'session_id("' . $id('strict') . '"); session_start(); var_dump(session_id() === "' . $id('strict') . '"); ' . $show);
echo request($base + ['session.use_strict_mode' => 1], 'session_id("' . $id('strict2') . '"); session_start(["read_and_close" => true]); var_dump(session_id() === "' . $id('strict2') . '");');

echo "-- lazy_write, unchanged: still migrated; read_and_close: read, nothing written\n";
$legacy($id('lazy'), 'l|i:1;');
echo request($on, 'session_id("' . $id('lazy') . '"); session_start(); ' . $show);
var_dump(substr((string) mc_get($a['port'], 'memcast.sess.' . $id('lazy')), 24));
$legacy($id('ro'), 'r|i:1;');
echo request($on, 'session_id("' . $id('ro') . '"); session_start(["read_and_close" => true]); ' . $show);
var_dump(mc_has($a['port'], 'memcast.sess.' . $id('ro')), mc_has($b['port'], 'memcast.sess.' . $id('ro')));

echo "-- php-memcached's create_sid leaves an empty value: the session exists\n";
$legacy($id('empty'), '');
echo request($on + ['session.use_strict_mode' => 1], 'session_id("' . $id('empty') . '"); session_start(); var_dump(session_id() === "' . $id('empty') . '");');

echo "-- a custom memcached.sess_prefix\n";
mc_set_raw($b['port'], 'shop.' . $id('shop'), 'c|i:3;');
echo request($on + ['memcast.migrate_prefix' => 'shop.'], 'session_id("' . $id('shop') . '"); session_start(["read_and_close" => true]); ' . $show);

echo "-- pecl-memcache: the bare id; large values zlib-compressed (flag 2)\n";
$big = 'blob|s:30000:"' . str_repeat('ab', 15000) . '";';
mc_set_raw($b['port'], $id('pecl'), 'p|i:1;');
mc_set_raw($b['port'], $id('peclbig'), gzcompress($big), 2);
$pecl = $base + ['memcast.migrate_from' => 'memcache'];
echo request($pecl, 'session_id("' . $id('pecl') . '"); session_start(["read_and_close" => true]); ' . $show);
echo request($pecl, 'session_id("' . $id('peclbig') . '"); session_start(); var_dump(strlen($_SESSION["blob"]));');
var_dump(substr((string) mc_get($a['port'], 'memcast.sess.' . $id('peclbig')), 24) === $big);

echo "-- a value php-memcached's sessions never have (flags 1): one warning, the session starts empty, the value is left\n";
mc_set_raw($b['port'], 'memc.sess.key.' . $id('odd'), 'i:1;', 1);
echo request($on, 'session_id("' . $id('odd') . '"); var_dump(session_start()); ' . $show);
var_dump(mc_get($b['port'], 'memc.sess.key.' . $id('odd')));
?>
--EXPECTF--
-- off: not read
[]
-- on: read; the write stores memcast's format, not as a create
{"user":"alice","n":1}
string(2) "MC"
int(0)
string(23) "user|s:5:"alice";n|i:2;"
legacy key left: true
{"user":"alice","n":2}
-- both exist: memcast's own wins
{"v":"memcast"}
-- destroy removes both (php-memcached's replicas too)
{"x":1}
bool(true)
bool(false)
bool(false)
[]
-- strict mode keeps an id only php-memcached holds (and replaces it when off)
bool(true)
{"s":5}
bool(false)
-- lazy_write, unchanged: still migrated; read_and_close: read, nothing written
{"l":1}
string(6) "l|i:1;"
{"r":1}
bool(false)
bool(false)
-- php-memcached's create_sid leaves an empty value: the session exists
bool(true)
-- a custom memcached.sess_prefix
{"c":3}
-- pecl-memcache: the bare id; large values zlib-compressed (flag 2)
{"p":1}
int(30000)
bool(true)
-- a value php-memcached's sessions never have (flags 1): one warning, the session starts empty, the value is left
%AWarning: session_start(): memcast: memc.sess.key.odd00000000000000000000000000000 on 127.0.0.1:%d: stored with client flags 0x1, which memcached's session handler never writes (not a session, or written by another client); not read, the session starts empty (memcast.migrate_from = memcached) in Command line code on line 1
bool(true)
[]
string(4) "i:1;"
