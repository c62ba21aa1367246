--TEST--
with a key file, sessions are sealed: memcached holds no session id and no session data (keys hashed, data encrypted), everything reads back; memcast.seal=0 stores them plain, as before
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$key = key_file(str_repeat('k', 40));
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'memcast.key_file' => $key];
$ids = ['sealedid000000000000000000000001', 'sealedid000000000000000000000002'];
foreach ($ids as $n => $id) {
    echo request($ini, '
        session_id("' . $id . '"); session_start();
        $_SESSION["user"] = "alice' . $n . '"; $_SESSION["csrf"] = "tok123secret";
        var_dump(session_write_close());
    ');
}
// What anyone who reaches the port sees.
$keys = mc_keys($mc['port']);
$dump = implode("\n", $keys);
foreach ($keys as $k) {
    $dump .= "\n" . mc_get($mc['port'], $k);
}
$sessions = array_values(array_filter($keys, fn ($k) => str_starts_with($k, 'memcast.sess.')));
echo count($sessions), " session keys: ", implode(' ', array_map(fn ($k) => preg_match('/^memcast\.sess\.[0-9a-f]{32}$/', $k) ? 'hashed' : $k, $sessions)), "\n";
foreach (array_merge($ids, ['sealedid', 'alice', 'tok123secret', 'user|', 'csrf']) as $secret) {
    echo "$secret: ", str_contains($dump, $secret) ? 'FOUND' : 'absent', "\n";
}
// Every session reads back, and is locked and written again under the same key.
foreach ($ids as $n => $id) {
    echo request($ini, '
        session_id("' . $id . '"); session_start(); echo $_SESSION["user"], " ", $_SESSION["csrf"], "\n";
        $_SESSION["n"] = 1; session_write_close();
        session_id("' . $id . '"); session_start(); echo $_SESSION["n"], "\n"; session_destroy();
        session_id("' . $id . '"); session_start(); var_dump($_SESSION); session_write_close();
    ');
}
echo count(array_filter(mc_keys($mc['port']), fn ($k) => str_starts_with($k, 'memcast.sess.'))), " session keys\n";

// memcast.seal=0: the id in the key and the data as PHP encoded it.
echo request($ini + ['memcast.seal' => '0'], '
    session_id("plainid0000000000000000000000001"); session_start(); $_SESSION["user"] = "bob"; session_write_close();
    session_id("plainid0000000000000000000000001"); session_start(); echo $_SESSION["user"], "\n";
');
echo substr(mc_get($mc['port'], 'memcast.sess.plainid0000000000000000000000001'), 24), "\n";
?>
--EXPECT--
bool(true)
bool(true)
2 session keys: hashed hashed
sealedid000000000000000000000001: absent
sealedid000000000000000000000002: absent
sealedid: absent
alice: absent
tok123secret: absent
user|: absent
csrf: absent
alice0 tok123secret
1
array(0) {
}
alice1 tok123secret
1
array(0) {
}
2 session keys
bob
user|s:3:"bob";
