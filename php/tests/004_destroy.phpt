--TEST--
session_destroy() leaves a tombstone: the next request with that id starts empty
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
$out = request($ini, 'session_start(); $_SESSION["x"] = 1; echo session_id();');
$id = trim($out);
echo request($ini, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION["x"]); var_dump(session_destroy());');
$raw = mc_get($mc['port'], "memcast.sess.$id");
// The header's flags byte (offset 3) marks a tombstone; no data follows the header.
var_dump(substr($raw, 0, 2), ord($raw[3]) & 1, strlen($raw));
echo request($ini, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION);');
?>
--EXPECT--
int(1)
bool(true)
string(2) "MC"
int(1)
int(24)
array(0) {
}
