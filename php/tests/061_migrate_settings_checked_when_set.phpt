--TEST--
memcast.migrate_from and memcast.migrate_prefix are checked when set: a handler memcast cannot read, a prefix with spaces, or a prefix equal to memcast.prefix is refused with the reason
--FILE--
<?php
require __DIR__ . '/memcast.inc';
// php.ini's On (read as "1") names no handler; Off (read as "") is off.
echo request(['memcast.migrate_from' => 'On'], 'var_dump(ini_get("memcast.migrate_from"));');
echo request(['memcast.migrate_from' => 'php-memcached', 'memcast.migrate_prefix' => '"a b"'],
    'var_dump(ini_get("memcast.migrate_from"), ini_get("memcast.migrate_prefix"));');
echo request([], 'var_dump(ini_set("memcast.migrate_from", "On"), ini_set("memcast.migrate_from", "memcache"), ini_set("memcast.migrate_from", "Off"), ini_set("memcast.migrate_prefix", "shop."));');
// The prefix of memcast's own keys: the two handlers' sessions would be one.
$mc = mc_start();
echo request(['session.save_path' => "127.0.0.1:{$mc['port']}", 'memcast.migrate_from' => 'memcached', 'memcast.migrate_prefix' => 'memcast.sess.'],
    'var_dump(session_start());');
?>
--EXPECTF--
Warning: PHP Startup: memcast: invalid value "1" for memcast.migrate_from: expected memcached (php-memcached), memcache (pecl-memcache), memcast (memcast's own sessions stored unsealed, before memcast.seal) or off; the default "off" is used in Unknown on line 0
string(3) "off"

Warning: PHP Startup: memcast: invalid value "php-memcached" for memcast.migrate_from: expected memcached (php-memcached), memcache (pecl-memcache), memcast (memcast's own sessions stored unsealed, before memcast.seal) or off; the default "off" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "a b" for memcast.migrate_prefix: expected at most 100 bytes without spaces or control characters; the default "" is used in Unknown on line 0
string(3) "off"
string(0) ""

Warning: ini_set(): memcast: invalid value "On" for memcast.migrate_from: expected memcached (php-memcached), memcache (pecl-memcache), memcast (memcast's own sessions stored unsealed, before memcast.seal) or off; it stays "off" in Command line code on line 1
bool(false)
string(3) "off"
string(8) "memcache"
string(0) ""

Warning: session_start(): memcast: invalid value "memcast.sess." for memcast.migrate_prefix: the other handler's keys would be memcast's own (memcast.prefix): give memcast its own prefix in Command line code on line 1

Warning: session_start(): Failed to initialize storage module: memcast (path: %s) in Command line code on line 1
bool(false)
