--TEST--
A session id outside PHP's alphabet (A-Z a-z 0-9 , -) or over 256 characters is refused as by the files handler: the same warning, session_start() false, nothing stored; strict mode replaces it
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'session.use_strict_mode' => 0];
same_as_files(on_memcast_and_files($ini, fn($request) => $request('
    foreach (["under_score", "dot.ted", str_repeat("a", 257)] as $id) {
        session_id($id);
        var_dump(session_start(), session_status() === PHP_SESSION_ACTIVE);
    }
    ini_set("session.use_strict_mode", 1);
    session_id("under_score");
    var_dump(session_start(), session_id() !== "under_score");
')));
var_dump(mc_get($mc['port'], 'memcast.sess.under_score'), mc_get($mc['port'], 'memcast.sess.dot.ted'));
?>
--EXPECTF--
Warning: session_start(): Session ID is too long or contains illegal characters. Only the A-Z, a-z, 0-9, "-", and "," characters are allowed in Command line code on line %d

Warning: session_start(): Failed to read session data: HANDLER (path: PATH) in Command line code on line %d
bool(false)
bool(false)

Warning: session_start(): Session ID is too long or contains illegal characters. Only the A-Z, a-z, 0-9, "-", and "," characters are allowed in Command line code on line %d

Warning: session_start(): Failed to read session data: HANDLER (path: PATH) in Command line code on line %d
bool(false)
bool(false)

Warning: session_start(): Session ID is too long or contains illegal characters. Only the A-Z, a-z, 0-9, "-", and "," characters are allowed in Command line code on line %d

Warning: session_start(): Failed to read session data: HANDLER (path: PATH) in Command line code on line %d
bool(false)
bool(false)
bool(true)
bool(true)
== same on the files handler
NULL
NULL
