--TEST--
session_regenerate_id(true) moves the data to a new id and the old id reads empty
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
$out = request($ini, '
    session_start();
    $_SESSION["cart"] = [1, 2, 3];
    $old = session_id();
    var_dump(session_regenerate_id(true));
    echo "old=$old new=", session_id(), "\n";
    var_dump(session_write_close());
');
preg_match('/old=(\w+) new=(\w+)/', $out, $m);
[, $old, $new] = $m;
echo preg_replace('/old=\w+ new=\w+/', 'old=... new=...', $out);
var_dump($old !== $new);
echo request($ini, 'session_id("' . $new . '"); session_start(); var_dump($_SESSION["cart"]);');
echo request($ini, 'session_id("' . $old . '"); session_start(); var_dump($_SESSION);');
?>
--EXPECT--
bool(true)
old=... new=...
bool(true)
bool(true)
array(3) {
  [0]=>
  int(1)
  [1]=>
  int(2)
  [2]=>
  int(3)
}
array(0) {
}
