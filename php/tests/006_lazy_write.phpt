--TEST--
session.lazy_write: unchanged data is touched, not rewritten; changed data is written
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'session.lazy_write' => 1];
$id = trim(request($ini, 'session_start(); $_SESSION["n"] = 1; echo session_id();'));
$key = "memcast.sess.$id";
$before = mc_get($mc['port'], $key);
$touches = mc_stat($mc['port'], 'cmd_touch');
echo request($ini, 'session_id("' . $id . '"); session_start(); var_dump($_SESSION["n"]); var_dump(session_write_close());');
var_dump(mc_stat($mc['port'], 'cmd_touch') - $touches);
var_dump(mc_get($mc['port'], $key) === $before);
echo request($ini, 'session_id("' . $id . '"); session_start(); $_SESSION["n"]++; var_dump(session_write_close());');
var_dump(mc_stat($mc['port'], 'cmd_touch') - $touches);
var_dump(mc_get($mc['port'], $key) === $before, str_contains(mc_get($mc['port'], $key), 'n|i:2;'));
?>
--EXPECT--
int(1)
bool(true)
int(1)
bool(true)
bool(true)
int(1)
bool(false)
bool(true)
