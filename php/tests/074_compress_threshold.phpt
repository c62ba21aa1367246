--TEST--
memcast.compress_threshold: shown by phpinfo() and ini_get(), checked when set, and a large session written with it on reads back whole
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
phpinfo(INFO_MODULES);
$info = ob_get_clean();
preg_match('/^memcast\.compress_threshold => .*$/m', $info, $m);
echo $m[0], "\n";
var_dump(ini_get('memcast.compress_threshold'));
var_dump(ini_set('memcast.compress_threshold', '0'), ini_set('memcast.compress_threshold', '2K'));
var_dump(@ini_set('memcast.compress_threshold', '-1'), @ini_set('memcast.compress_threshold', '9M'));
var_dump(ini_get('memcast.compress_threshold'));
echo request(['memcast.compress_threshold' => 'lots'], 'var_dump(ini_get("memcast.compress_threshold"));');

// Compression on stores a large session whole (it is compressed only in the
// frames sent to the group: tests/multihost.rs checks those on other hosts).
$mc = mc_start();
$ini = [
    'session.save_path' => "127.0.0.1:{$mc['port']}",
    'memcast.compress_threshold' => '1',
];
$write = 'session_id("compressed74"); session_start();'
    . ' for ($i = 0; $i < 60; $i++) { $_SESSION["cart"][] = ["sku" => 100000 + $i, "title" => "Product $i", "qty" => $i % 4]; }'
    . ' $_SESSION["token"] = str_repeat("9f3a", 16); echo md5(session_encode()), " ", strlen(session_encode()), "\n";';
$read = 'session_id("compressed74"); session_start(); echo md5(session_encode()), " ", strlen(session_encode()), "\n";';
$written = request($ini, $write);
$read_back = request($ini, $read);
echo $written === $read_back ? "read back whole\n" : "differs: $written / $read_back\n";
var_dump((int) explode(' ', trim($read_back))[1] > 3000);
mc_stop($mc);
?>
--EXPECTF--
memcast.compress_threshold => 1024 => 1024
string(4) "1024"
string(4) "1024"
string(1) "0"
bool(false)
bool(false)
string(2) "2K"

Warning: PHP Startup: memcast: invalid value "lots" for memcast.compress_threshold: expected a size from 0 (never) to 8M (bytes, or with a K or M suffix); the default "1024" is used in Unknown on line 0
string(4) "1024"
read back whole
bool(true)
