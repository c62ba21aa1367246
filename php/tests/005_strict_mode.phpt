--TEST--
with session.use_strict_mode=1 an unknown id is rejected and replaced; a known one is kept
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'session.use_strict_mode' => 1];
echo request($ini, '
    session_id("attackerchosenid0123456789abcdef");
    session_start();
    var_dump(session_id() !== "attackerchosenid0123456789abcdef", strlen(session_id()));
    $_SESSION["v"] = 1;
    echo "id=", session_id(), "\n";
');
echo request($ini, 'var_dump(1);');
$out = request($ini, 'session_start(); $_SESSION["v"] = 7; echo session_id();');
$id = trim($out);
echo request($ini, 'session_id("' . $id . '"); session_start(); var_dump(session_id() === "' . $id . '", $_SESSION["v"]);');
var_dump(mc_get($mc['port'], 'memcast.sess.attackerchosenid0123456789abcdef'));
?>
--EXPECTF--
bool(true)
int(32)
id=%s
int(1)
bool(true)
int(7)
NULL
