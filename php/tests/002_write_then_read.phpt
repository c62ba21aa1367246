--TEST--
a session written by one request is read by the next, byte for byte, including '|'
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
$out = request($ini, '
    session_start();
    $_SESSION["user"] = "alice|bob";
    $_SESSION["bytes"] = "\x00\xff|;:\r\n";
    $_SESSION["n"] = 41;
    echo "id=", session_id(), "\n";
    var_dump(session_write_close());
');
preg_match('/id=(\w+)/', $out, $m);
$id = $m[1];
echo str_replace("id=$id", 'id=...', $out);
echo request($ini, '
    session_id("' . $id . '");
    session_start();
    var_dump($_SESSION["user"], bin2hex($_SESSION["bytes"]), $_SESSION["n"] + 1);
');
$raw = mc_get($mc['port'], "memcast.sess.$id");
var_dump(substr($raw, 0, 2), str_contains($raw, 'user|s:9:"alice|bob"'));
?>
--EXPECT--
id=...
bool(true)
string(9) "alice|bob"
string(14) "00ff7c3b3a0d0a"
int(42)
string(2) "MC"
bool(true)
