--TEST--
a miss on a memcached not known complete is confirmed on the next server; unconfirmed it fails the read; a write that began from a miss never replaces a session that appeared meanwhile
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start();
$local = mc_start();
$next = mc_start();
$path = "127.0.0.1:{$local['port']}, 127.0.0.1:{$next['port']}";
$ini = ['session.save_path' => $path];

// A session both servers hold (memcastd replicated it).
$out = request($ini, 'session_start(); $_SESSION["user"] = "alice"; echo session_id(); session_write_close();');
$id = trim($out);
$key = "memcast.sess.$id";
$raw = mc_get($local['port'], $key);
mc_raw($next['port'], "set $key 0 600 " . strlen($raw) . "\r\n" . $raw);

echo "-- a restarted local memcached (empty, no warm sentinel): the next server answers\n";
mc_raw($local['port'], "delete $key");
mc_raw($local['port'], 'delete memcast:warm');
echo request($ini, "session_id('$id'); session_start(); var_dump(\$_SESSION); \$_SESSION['n'] = 1; var_dump(session_write_close());");
var_dump(str_contains(mc_get($local['port'], $key), 'user|s:5:"alice";n|i:1;'));

echo "-- strict mode does not throw the session away either\n";
mc_raw($local['port'], "delete $key");
echo request($ini + ['session.use_strict_mode' => 1],
    "session_id('$id'); session_start(); var_dump(session_id() === '$id', \$_SESSION['user']); session_write_close();");

echo "-- not known complete, and the only other server is down: the read fails, nothing is written\n";
mc_raw($local['port'], "delete $key");
$dead = free_port();
echo preg_replace('/port \d+|:\d+/', ':PORT', request(['session.save_path' => "127.0.0.1:{$local['port']}, 127.0.0.1:$dead"],
    "session_id('$id'); var_dump(session_start()); \$_SESSION['x'] = 1; var_dump(@session_write_close());"));
var_dump(mc_get($local['port'], $key));

echo "-- both servers miss: a new session, created with add\n";
$new = 'confirmedmiss0123456789abcdef';
echo request($ini, "session_id('$new'); session_start(); var_dump(\$_SESSION); \$_SESSION['fresh'] = 1; var_dump(session_write_close());");
var_dump(str_contains(mc_get($local['port'], "memcast.sess.$new"), 'fresh|i:1;'));

echo "-- the session appears while a request that missed runs: its write is refused, the session kept\n";
$late = 'appearedmeanwhile0123456789ab';
$code = "session_id('$late'); session_start(); echo count(\$_SESSION), \"\\n\"; sleep(1); \$_SESSION['empty'] = 1; var_dump(session_write_close());";
$req = start_request($ini, $code);
usleep(500000);
$other = request($ini + ['memcast.locking' => 0], "session_id('$late'); session_start(); \$_SESSION['real'] = 'yes'; session_write_close(); echo 'stored elsewhere';");
echo $other, "\n";
echo preg_replace('/127\.0\.0\.1:\d+/', 'SERVER', finish($req));
var_dump(str_contains(mc_get($local['port'], "memcast.sess.$late"), "real|s:3:\"yes\""));

echo "-- an id this process created needs no confirmation (the next server is not asked)\n";
$gets = mc_stat($next['port'], 'cmd_get');
echo request($ini, 'session_start(); $_SESSION["a"] = 1; var_dump(session_write_close());');
var_dump(mc_stat($next['port'], 'cmd_get') - $gets);

ob_start(); phpinfo(INFO_MODULES); $info = ob_get_clean();
?>
--EXPECTF--
-- a restarted local memcached (empty, no warm sentinel): the next server answers
array(1) {
  ["user"]=>
  string(5) "alice"
}
bool(true)
bool(true)
-- strict mode does not throw the session away either
bool(true)
string(5) "alice"
-- not known complete, and the only other server is down: the read fails, nothing is written

Warning: session_start(): memcast: cannot read session: 127.0.0.1:PORT does not hold it but is not known complete (restarted, evicting, or its memcastd is away), and no other server could confirm the miss (no memcached server accepted it (tried memcached 127.0.0.1:PORT: %s)); not starting an empty session that could replace the real one in Command line code on line 1

Warning: session_start(): Failed to read session data: memcast (path: %s) in Command line code on line 1
bool(false)
bool(false)
NULL
-- both servers miss: a new session, created with add
array(0) {
}
bool(true)
bool(true)
-- the session appears while a request that missed runs: its write is refused, the session kept
stored elsewhere
0

Warning: session_write_close(): memcast: session not stored: this request started it as new (a miss), but SERVER now holds a session with this id; it is kept and this request's write is dropped in Command line code on line 1
bool(false)
bool(true)
-- an id this process created needs no confirmation (the next server is not asked)
bool(true)
int(0)
