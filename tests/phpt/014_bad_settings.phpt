--TEST--
bad settings are clear warnings naming the setting, never a crash
--FILE--
<?php
require __DIR__ . '/memcast.inc';
echo request(['session.save_path' => '127.0.0.1:11211', 'memcast.prefix' => 'a b'], 'var_dump(session_start());');
echo request(['session.save_path' => 'localhost:notaport'], 'var_dump(session_start());');
echo request(['session.save_path' => '127.0.0.1:11211', 'memcast.io_timeout_ms' => 'fast'], 'var_dump(session_start());');
?>
--EXPECTF--
Warning: session_start(): memcast: memcast.prefix="a b": must be at most 100 bytes without spaces or control characters in Command line code on line 1

Warning: session_start(): Failed to initialize storage module: memcast (path: 127.0.0.1:11211) in Command line code on line 1
bool(false)

Warning: session_start(): memcast: session.save_path "localhost:notaport": server address "localhost:notaport": bad port "notaport" in Command line code on line 1

Warning: session_start(): Failed to initialize storage module: memcast (path: localhost:notaport) in Command line code on line 1
bool(false)

Warning: session_start(): memcast: memcast.io_timeout_ms="fast": expected a whole number from 1 to 60000 in Command line code on line 1

Warning: session_start(): Failed to initialize storage module: memcast (path: 127.0.0.1:11211) in Command line code on line 1
bool(false)
