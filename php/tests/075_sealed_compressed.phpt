--TEST--
sealed sessions of at least memcast.compress_threshold bytes are compressed before sealing: memcached holds less than the session, which reads back whole; with 0, or below the threshold, the sealed value is the session plus 48 bytes, as before
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$key = key_file(str_repeat('k', 40));
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'memcast.key_file' => $key];
// A logged-in shop session of about 3 KB: a third of it random-looking hex
// tokens (which do not compress), field names, numbers, a flash message.
$fill = '
    $tok = fn ($s, $n) => substr(hash("sha256", $s) . hash("sha256", "$s+"), 0, $n);
    $_SESSION["csrf_token"] = $tok("csrf", 64);
    $_SESSION["user"] = ["id" => 48213, "email" => "julia.martinez@example.com", "remember_token" => $tok("rt", 64), "api_key" => $tok("api", 40)];
    for ($i = 0; $i < 12; $i++) {
        $_SESSION["cart"][] = ["line_id" => $tok("line$i", 32), "sku" => "SKU-" . (10000 + 7 * $i), "name" => "Cotton t-shirt, white, M", "qty" => $i % 4, "price_cents" => 1999];
    }
    $_SESSION["form_nonces"] = array_map(fn ($i) => $tok("nonce$i", 40), range(1, 8));
    $_SESSION["flash"] = str_repeat("Your order confirmation was sent to your email address. ", 3);
';
$report = 'echo strlen(session_encode()), " ", md5(session_encode()), "\n";';
function stored_len(array $mc, array $before): int {
    $new = array_values(array_diff(mc_keys($mc['port']), $before));
    return strlen(mc_get($mc['port'], $new[0])) - 24; // after the header
}
foreach (['1024 (default)' => [], '0' => ['memcast.compress_threshold' => '0']] as $name => $extra) {
    $id = 'compressed75' . strlen($name);
    $before = mc_keys($mc['port']);
    $written = request($ini + $extra, "session_id('$id'); session_start(); $fill $report");
    $len = (int) $written;
    $stored = stored_len($mc, $before);
    $read = request($ini + $extra, "session_id('$id'); session_start(); $report");
    echo "compress_threshold $name: session ", $len > 2900 && $len < 3300 ? "~3 KB" : $len, ", ";
    echo $stored < $len ? "stored smaller (" . round(100 * $stored / $len) . " %)" : "stored " . ($stored - $len) . " bytes more";
    echo ", ", $read === $written ? "reads back whole" : "differs: $written / $read", "\n";
}
// A session sealed compressed opens with the setting off too (every host
// opens both), and is written back uncompressed.
$before = mc_keys($mc['port']);
request($ini, "session_id('both75'); session_start(); $fill");
$read = request($ini + ['memcast.compress_threshold' => '0'], "session_id('both75'); session_start(); \$_SESSION['n'] = 1; $report");
echo strlen($read) > 30 ? "opened with compress_threshold 0\n" : "missed: $read\n";
echo "rewritten: stored ", stored_len($mc, $before) - (int) $read, " bytes more\n";
// Below the threshold: as before.
$before = mc_keys($mc['port']);
$small = request($ini, 'session_id("small75"); session_start(); $_SESSION["user"] = str_repeat("alice ", 100); ' . $report);
echo "small session: stored ", stored_len($mc, $before) - (int) $small, " bytes more\n";
mc_stop($mc);
?>
--EXPECTF--
compress_threshold 1024 (default): session ~3 KB, stored smaller (%d %), reads back whole
compress_threshold 0: session ~3 KB, stored 48 bytes more, reads back whole
opened with compress_threshold 0
rewritten: stored 48 bytes more
small session: stored 48 bytes more
