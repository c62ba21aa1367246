--TEST--
memcast.migrate_from = memcast: sessions stored unsealed (before sealing was on) are read once sealing is on, and the next write stores them sealed; a destroy while migrating removes the plain copy; without the setting they are not found; unsealed, the setting never touches memcast's own keys
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$key = key_file(str_repeat('k', 40));
$at = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'memcast.key_file' => $key];
$id = 'upgraded00000000000000000000001';
// Before the upgrade: unsealed.
echo request($at + ['memcast.seal' => '0'], '
    session_id("' . $id . '"); session_start(); $_SESSION["user"] = "alice"; var_dump(session_write_close());
    session_id("upgradedgone000000000000000001"); session_start(); $_SESSION["x"] = 1; session_write_close();
    session_id("upgradedgone000000000000000001"); session_start(); session_destroy();
');
// Sealed, without migrating: not found.
echo request($at, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION); session_abort();');
// Sealed, migrating: read, then stored sealed.
$migrating = $at + ['memcast.migrate_from' => 'memcast'];
echo request($migrating, '
    session_id("' . $id . '"); session_start(); var_dump($_SESSION["user"]); $_SESSION["n"] = 1; var_dump(session_write_close());
    session_id("upgradedgone000000000000000001"); session_start(); var_dump($_SESSION); session_abort();
    ob_start(); phpinfo(INFO_MODULES); preg_match("/Sessions read from memcast.migrate_from => (\d+)/", ob_get_clean(), $m); echo "migrated reads: $m[1]\n";
');
$sealed = array_values(array_filter(mc_keys($mc['port']), fn ($k) => preg_match('/^memcast\.sess\.[0-9a-f]{32}$/', $k)));
echo count($sealed), " sealed key, plain data in it: ", var_export(str_contains(mc_get($mc['port'], $sealed[0]), 'alice'), true), "\n";
// Read sealed now, even without the setting.
echo request($at, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION["user"], $_SESSION["n"]); session_write_close();');
echo "plain copy still there: ", var_export(mc_get($mc['port'], "memcast.sess.$id") !== null, true), "\n";
echo request($migrating, 'session_id("' . $id . '"); session_start(); session_destroy();');
echo "plain copy after destroy: ", var_export(mc_get($mc['port'], "memcast.sess.$id"), true), "\n";
echo request($migrating, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION);');
// Unsealed, the setting names memcast's own key: it is never read or deleted
// as the other handler's (the destroy's tombstone stays).
echo request($migrating + ['memcast.seal' => '0'], '
    session_id("plainstill0000000000000000001"); session_start(); $_SESSION["x"] = 1; session_write_close();
    session_id("plainstill0000000000000000001"); session_start(); var_dump($_SESSION["x"]); session_destroy();
');
echo "tombstone kept: ", var_export(ord(mc_get($mc['port'], 'memcast.sess.plainstill0000000000000000001')[3]) === 1, true), "\n";
?>
--EXPECT--
bool(true)
array(0) {
}
string(5) "alice"
bool(true)
array(0) {
}
migrated reads: 1
1 sealed key, plain data in it: false
string(5) "alice"
int(1)
plain copy still there: true
plain copy after destroy: NULL
array(0) {
}
int(1)
tombstone kept: true
