--TEST--
reads and writes fail over down session.save_path without an error when the first server dies
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start(); // output must not count as sent headers
$local = mc_start();
$next = mc_start();
$dead = free_port();
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:{$local['port']}, 127.0.0.1:{$next['port']}");
ini_set('display_errors', 1);
ini_set('error_reporting', -1);

// A first server that is down from the start: the next one serves.
echo request(['session.save_path' => "127.0.0.1:$dead, 127.0.0.1:{$next['port']}"],
    'session_start(); $_SESSION["a"] = 1; var_dump(session_write_close());');

// One long-lived process (a php-fpm worker): the local memcached dies between requests.
session_start();
$_SESSION['n'] = 1;
$id = session_id();
var_dump(session_write_close());
var_dump(mc_get($local['port'], "memcast.sess.$id") !== null, mc_get($next['port'], "memcast.sess.$id"));
// The failover server already holds the session (in a cluster memcastd copied it there).
mc_raw($next['port'], "set memcast.sess.$id 0 60 " . strlen(mc_get($local['port'], "memcast.sess.$id")) . "\r\n" . mc_get($local['port'], "memcast.sess.$id"));
mc_stop($local);
session_id($id);
var_dump(session_start());
var_dump($_SESSION['n']);
$_SESSION['n']++;
var_dump(session_write_close());
var_dump(str_contains(mc_get($next['port'], "memcast.sess.$id"), 'n|i:2;'));
echo "no warnings\n";
?>
--EXPECT--
bool(true)
bool(true)
bool(true)
NULL
bool(true)
int(1)
bool(true)
bool(true)
no warnings
