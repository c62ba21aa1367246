--TEST--
session ids that would break memcached's text protocol never reach a socket: PHP replaces some, memcast refuses the rest with a clear warning (PHP's own for ids outside A-Z a-z 0-9 , -, as the files handler)
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$mc = mc_start();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$mc['port']}");
ini_set('session.use_strict_mode', '0');
$commands = fn() => mc_stat($mc['port'], 'cmd_get') + mc_stat($mc['port'], 'cmd_set') + mc_stat($mc['port'], 'cmd_touch');
$bad = [
    'space' => "abc def",
    'crlf' => "abc\r\nflush_all",
    'nul' => "abc\0def",
    'control' => "abc\x01def",
    'del' => "abc\x7fdef",
    'tab' => "abc\tdef",
    'long' => str_repeat('a', 240), // prefix + id over 250 bytes
];
foreach ($bad as $name => $id) {
    $items = mc_stat($mc['port'], 'curr_items');
    $before = $commands();
    session_id($id);
    $warnings = [];
    set_error_handler(function ($no, $msg) use (&$warnings) { $warnings[] = $msg; return true; });
    $started = session_start();
    restore_error_handler();
    $reached = $commands() - $before;
    if ($started) {
        // PHP itself replaced the id: a fresh, valid one reached memcached.
        $new = session_id();
        printf("%s: replaced by PHP, new id valid: %s\n", $name, var_export(preg_match('/^[a-zA-Z0-9,-]{16,}$/', $new) === 1, true));
        session_write_close();
    } else {
        printf("%s: refused, %d commands reached memcached, warning: %s\n", $name, $reached,
            count(array_filter($warnings, fn($w) => str_contains($w, "breaks memcached's key rules") || str_contains($w, 'Session ID is too long or contains illegal characters'))) === 1 ? 'clear' : 'MISSING');
        session_abort();
    }
}
// Nothing stored under any key but valid ones.
$dump = mc_raw($mc['port'], 'lru_crawler metadump all');
var_dump(preg_match('/key=memcast\.sess\.abc/', $dump));
// Strict mode: the handler's validate_sid refuses such an id and PHP makes a new one.
ini_set('session.use_strict_mode', '1');
session_id("abc\x01def");
var_dump(@session_start(), preg_match('/^[a-zA-Z0-9,-]+$/', session_id()));
session_write_close();
?>
--EXPECTF--
space: replaced by PHP, new id valid: true
crlf: replaced by PHP, new id valid: true
nul: %s
control: refused, 0 commands reached memcached, warning: clear
del: refused, 0 commands reached memcached, warning: clear
tab: %s
long: refused, 0 commands reached memcached, warning: clear
int(0)
bool(true)
int(1)
