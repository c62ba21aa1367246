--TEST--
a session of 1 MB is written and read back identical
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
echo request($ini, '
    mt_srand(7);
    $blob = "";
    for ($i = 0; $i < 1048576; $i++) { $blob .= chr(mt_rand(0, 255)); }
    session_id("bigsession0123456789abcdefABCDEF");
    session_start();
    $_SESSION["blob"] = $blob;
    echo md5($blob), "\n";
    var_dump(strlen(session_encode()) > 1048576, session_write_close());
');
echo request($ini, '
    session_id("bigsession0123456789abcdefABCDEF");
    session_start();
    echo md5($_SESSION["blob"]), "\n";
    var_dump(strlen($_SESSION["blob"]));
');
?>
--EXPECTF--
%x
bool(true)
bool(true)
%x
int(1048576)
