--TEST--
a key roll keeps sealed sessions: a new key made from the old one keeps every memcached key; a value sealed under the old key opens while that key is accepted and is sealed under the new one by the next request that reads it (even one that changes nothing); once the old key is dropped, a value still sealed under it is a miss with one warning; a new key that hashes ids differently is one warning at once
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$old_secret = str_repeat('k', 40);
$new_secret = str_repeat('n', 40);
$old = key_file($old_secret . "\n");
// What `memcastd keygen --force` over a copy of the old file writes.
$new = key_file($new_secret . "\nmemcast-session-id-key: " . hash('sha256', "memcast session id key\0" . $old_secret) . "\n");
$key_id = fn (string $secret) => substr(hash('sha256', "memcast key id\0" . $secret), 0, 8);
$at = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
$id = 'rolling0000000000000000000000001';
echo request($at + ['memcast.key_file' => $old], '
    session_id("' . $id . '"); session_start(); $_SESSION["v"] = "before"; var_dump(session_write_close());
');
$keys = array_values(array_filter(mc_keys($mc['port']), fn ($k) => str_starts_with($k, 'memcast.sess.')));
$session = $keys[0];
$sealed_old = mc_get($mc['port'], $session);
echo "sealed under the old key: ", var_export(bin2hex(substr($sealed_old, 28, 4)) === $key_id($old_secret), true), "\n";
// Mid-roll: signs with the new key, accepts the old one. A request that
// only reads (session.lazy_write: no change, only a touch) seals it again.
$mid = $at + ['memcast.key_file' => $new, 'memcast.accept_key_file' => $old];
echo request($mid, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION["v"]); var_dump(session_write_close());');
echo "read-only request sealed it under the new key: ", var_export(bin2hex(substr(mc_get($mc['port'], $session), 28, 4)) === $key_id($new_secret), true), "\n";
echo request($mid, '
    session_id("' . $id . '"); session_start(); var_dump($_SESSION["v"]);
    $_SESSION["v"] = "after"; var_dump(session_write_close());
');
$keys_now = array_values(array_filter(mc_keys($mc['port']), fn ($k) => str_starts_with($k, 'memcast.sess.')));
echo "same memcached key: ", var_export($keys_now === [$session], true), "\n";
$sealed_new = mc_get($mc['port'], $session);
echo "sealed under the new key: ", var_export(bin2hex(substr($sealed_new, 28, 4)) === $key_id($new_secret), true), "\n";
// Rolled: the old key is no longer accepted.
$rolled = $at + ['memcast.key_file' => $new];
echo request($rolled, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION["v"]);');
mc_set_raw($mc['port'], $session, $sealed_old);
echo request($rolled, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION["v"] ?? null);');
// A fresh key as the new one: the mistake is named at once.
$fresh = key_file(str_repeat('z', 40));
echo request($at + ['memcast.key_file' => $fresh, 'memcast.accept_key_file' => $old], 'session_start(); session_write_close();');
?>
--EXPECTF--
bool(true)
sealed under the old key: true
string(6) "before"
bool(true)
read-only request sealed it under the new key: true
string(6) "before"
bool(true)
same memcached key: true
sealed under the new key: true
string(5) "after"

Warning: session_start(): memcast: session %x on 127.0.0.1:%d: the stored value is sealed under key %x, which this host no longer accepts; read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process) in Command line code on line %d
NULL

Warning: session_start(): memcast: memcast.key_file %s and memcast.accept_key_file %s hash session ids differently: sessions stored under one are not found under the other; make the new key from a copy of the old one (cp OLD NEW; memcastd keygen --force NEW), which keeps the session-id key in Command line code on line %d
