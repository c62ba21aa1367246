--TEST--
bad settings are clear warnings naming the setting, at start-up, never a crash
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$path = "127.0.0.1:{$mc['port']}";
echo request(['session.save_path' => $path, 'memcast.prefix' => '"a b"'], 'var_dump(ini_get("memcast.prefix"), session_start());');
echo request(['session.save_path' => 'localhost:notaport'], 'var_dump(session_start());');
echo request(['session.save_path' => $path, 'memcast.io_timeout_ms' => 'fast'], 'var_dump(ini_get("memcast.io_timeout_ms"), session_start());');
?>
--EXPECTF--
Warning: PHP Startup: memcast: invalid value "a b" for memcast.prefix: expected at most 100 bytes without spaces or control characters; the default "memcast.sess." is used in Unknown on line 0
string(13) "memcast.sess."
bool(true)

Warning: PHP Startup: memcast: session.save_path "localhost:notaport": server address "localhost:notaport": bad port "notaport"; expected "host:port, host:port, ..." (first the local memcached, then the failover list); also [IPv6]:port, /path/to/memcached.sock, unix:///path/to/memcached.sock, and the other handlers' host:port:weight, PERSISTENT=id and tcp://host:port?weight=N&timeout=N in Unknown on line 0

Warning: session_start(): memcast: session.save_path "localhost:notaport": server address "localhost:notaport": bad port "notaport"; expected %s in Command line code on line 1

Warning: session_start(): Failed to initialize storage module: memcast (path: localhost:notaport) in Command line code on line 1
bool(false)

Warning: PHP Startup: memcast: invalid value "fast" for memcast.io_timeout_ms: expected a whole number from 1 to 60000; the default "500" is used in Unknown on line 0
string(3) "500"
bool(true)
