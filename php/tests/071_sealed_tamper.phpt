--TEST--
a sealed session altered in memcached (one flipped byte), moved to another session's key, or replaced by unsealed data is a miss with one warning, never data handed to PHP; the next write replaces it
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$key = key_file(str_repeat('k', 40));
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'memcast.key_file' => $key];
function session_key_of(array $mc, array $ini, string $id): string {
    $before = mc_keys($mc['port']);
    request($ini, 'session_id("' . $id . '"); session_start(); $_SESSION["user"] = "' . $id . '"; session_write_close();');
    $new = array_values(array_diff(mc_keys($mc['port']), $before));
    return $new[0];
}
$a = session_key_of($mc, $ini, 'victim00000000000000000000000001');
$b = session_key_of($mc, $ini, 'attacker000000000000000000000001');
$read = '
    session_start(); var_dump($_SESSION["user"] ?? null);
    ob_start(); phpinfo(INFO_MODULES); preg_match("/Sealed values not opened \(read as misses\) => (\d+)/", ob_get_clean(), $m);
    echo "not opened: $m[1]\n";
    $_SESSION["user"] = "rewritten"; session_write_close();
    session_start(); var_dump($_SESSION["user"]); session_write_close();
';
// 1. One byte of the sealed data flipped.
$value = mc_get($mc['port'], $a);
$flipped = $value;
$flipped[40] = chr(ord($flipped[40]) ^ 1);
mc_set_raw($mc['port'], $a, $flipped);
echo request($ini, 'session_id("victim00000000000000000000000001");' . $read);
// 2. The attacker's own session copied over the victim's key: it does not
// open there (and the victim's data does not open under the attacker's).
mc_set_raw($mc['port'], $a, mc_get($mc['port'], $b));
echo request($ini, 'session_id("victim00000000000000000000000001");' . $read);
// 3. Unsealed data with a valid header.
$plain = substr(mc_get($mc['port'], $a), 0, 24) . 'user|s:5:"admin";';
mc_set_raw($mc['port'], $a, $plain);
echo request($ini, 'session_id("victim00000000000000000000000001");' . $read);
// Untouched: the attacker's session still reads.
echo request($ini, 'session_id("attacker000000000000000000000001"); session_start(); var_dump($_SESSION["user"]);');
// Counted where this host's memcastd exports it (memcast_php_sealed_unopened_total).
var_dump(mc_get($mc['port'], 'memcast:php:sealed_unopened'));
?>
--EXPECTF--
Warning: session_start(): memcast: session %x on 127.0.0.1:%d: the stored value does not open: altered in memcached, or copied there from another session's key; read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process) in Command line code on line %d
NULL
not opened: 1
string(9) "rewritten"

Warning: session_start(): memcast: session %x on 127.0.0.1:%d: the stored value does not open: altered in memcached, or copied there from another session's key; read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process) in Command line code on line %d
NULL
not opened: 1
string(9) "rewritten"

Warning: session_start(): memcast: session %x on 127.0.0.1:%d: the stored value is not sealed (stored by a host with memcast.seal = 0, or written by another tool); read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process) in Command line code on line %d
NULL
not opened: 1
string(9) "rewritten"
string(32) "attacker000000000000000000000001"
string(1) "3"
