--TEST--
every memcast.* value is checked when set: a bad php.ini value is reported at start-up and the default kept, ini_set() refuses it; a whitespace prefix and a publish endpoint cut at ';' are refused with a hint
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$bad = [
    'memcast.connect_timeout_ms' => 'abc',
    'memcast.io_timeout_ms' => '0',
    'memcast.retry_interval' => 'soon',
    'memcast.pgm_rate_kbps' => '-1',
    'memcast.pgm_recovery_ms' => 'x',
    'memcast.send_hwm' => '-5',
    'memcast.linger_ms' => 'long',
    'memcast.relay_timeout_ms' => '99999999',
    'memcast.warm_check' => 'maybe',
    'memcast.locking' => 'sometimes',
    'memcast.lock_wait_min' => '0',
    'memcast.lock_wait_max' => 'x',
    'memcast.lock_retries' => '-1',
    'memcast.lock_expire' => 'never',
    'memcast.encrypt' => 'please',
    'memcast.seal' => 'perhaps',
    'memcast.max_session_size' => '9M',
    'memcast.prefix' => '"   "',
    'memcast.publish' => 'epgm://eth0',
];
// One PHP start-up with every bad value: one warning each, defaults kept.
$out = request($bad, 'foreach (' . var_export(array_keys($bad), true) . ' as $k) { echo $k, " = ", var_export(ini_get($k), true), "\n"; }');
echo $out;
// php -i shows the defaults, never the refused values.
$args = [PHP_BINARY, '-n', '-d', 'extension=' . memcast_so(), '-d', 'memcast.connect_timeout_ms=abc', '-i'];
$proc = proc_open($args, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
$info = stream_get_contents($pipes[1]);
stream_get_contents($pipes[2]);
proc_close($proc);
preg_match('/^memcast\.connect_timeout_ms => .*$/m', $info, $m);
echo "php -i: $m[0]\n";
// At run time: ini_set() returns false and the value stays.
echo request([], 'var_dump(ini_set("memcast.connect_timeout_ms", "abc"), ini_get("memcast.connect_timeout_ms"));'
    . ' var_dump(ini_set("memcast.publish", "epgm://239.192.1.1:5555"), ini_set("memcast.publish", "epgm://eth0;10.1.1.1:5555"));'
    . ' var_dump(ini_set("memcast.locking", "off"), ini_set("memcast.encrypt", "yes"), ini_set("memcast.prefix", "app1."));');
?>
--EXPECTF--
Warning: PHP Startup: memcast: invalid value "epgm://eth0" for memcast.publish: no ;GROUP:PORT after the interface "eth0"; in php.ini an unquoted ';' starts a comment, so quote the value: "epgm://eth0;239.192.1.1:5555"; the default "" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "   " for memcast.prefix: expected at most 100 bytes without spaces or control characters; the default "memcast.sess." is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "abc" for memcast.connect_timeout_ms: expected a whole number from 1 to 60000; the default "100" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "0" for memcast.io_timeout_ms: expected a whole number from 1 to 60000; the default "500" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "soon" for memcast.retry_interval: expected seconds (2) or milliseconds (500ms); the default "2" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "-1" for memcast.pgm_rate_kbps: expected a whole number from 1 to 2147483647; the default "100000" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "x" for memcast.pgm_recovery_ms: expected a whole number from 1 to 2147483647; the default "2000" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "-5" for memcast.send_hwm: expected a whole number from 0 to 2147483647; the default "10000" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "long" for memcast.linger_ms: expected a whole number from 0 to 2147483647; the default "1000" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "99999999" for memcast.relay_timeout_ms: expected a whole number from 1 to 60000; the default "50" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "maybe" for memcast.warm_check: expected 1/0, on/off, yes/no, true/false; the default "1" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "sometimes" for memcast.locking: expected 1/0, on/off, yes/no, true/false; the default "1" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "0" for memcast.lock_wait_min: expected a whole number from 1 to 60000; the default "10" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "x" for memcast.lock_wait_max: expected a whole number from 1 to 60000; the default "200" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "-1" for memcast.lock_retries: expected a whole number from 0 to 1000000; the default "100" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "never" for memcast.lock_expire: expected a whole number from 0 to 2592000; the default "0" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "please" for memcast.encrypt: expected 1/0, on/off, yes/no, true/false; the default "0" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "perhaps" for memcast.seal: expected 1/0, on/off, yes/no, true/false; the default "1" is used in Unknown on line 0

Warning: PHP Startup: memcast: invalid value "9M" for memcast.max_session_size: expected a size from 1 to 8M (bytes, or with a K or M suffix); the default "4M" is used in Unknown on line 0
memcast.connect_timeout_ms = '100'
memcast.io_timeout_ms = '500'
memcast.retry_interval = '2'
memcast.pgm_rate_kbps = '100000'
memcast.pgm_recovery_ms = '2000'
memcast.send_hwm = '10000'
memcast.linger_ms = '1000'
memcast.relay_timeout_ms = '50'
memcast.warm_check = '1'
memcast.locking = '1'
memcast.lock_wait_min = '10'
memcast.lock_wait_max = '200'
memcast.lock_retries = '100'
memcast.lock_expire = '0'
memcast.encrypt = '0'
memcast.seal = '1'
memcast.max_session_size = '4M'
memcast.prefix = 'memcast.sess.'
memcast.publish = ''
php -i: memcast.connect_timeout_ms => 100 => 100

Warning: ini_set(): memcast: invalid value "abc" for memcast.connect_timeout_ms: expected a whole number from 1 to 60000; it stays "100" in Command line code on line 1
bool(false)
string(3) "100"

Warning: ini_set(): memcast: invalid value "epgm://239.192.1.1:5555" for memcast.publish: no interface: PGM needs the one to send and listen on, epgm://IFACE;239.192.1.1:5555 (e.g. epgm://eth0;239.192.1.1:5555; an interface name or its address); it stays "" in Command line code on line 1

Warning: ini_set(): memcast: invalid value "epgm://eth0;10.1.1.1:5555" for memcast.publish: group 10.1.1.1 is not a multicast address (224.0.0.0 to 239.255.255.255; 239.192.0.0/14 is for local use, e.g. 239.192.1.1); it stays "" in Command line code on line 1
bool(false)
bool(false)
string(1) "1"
string(1) "0"
string(13) "memcast.sess."