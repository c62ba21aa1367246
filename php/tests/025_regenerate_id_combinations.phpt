--TEST--
session_regenerate_id() in every combination (true/false, with and without writes, twice, strict mode, after destroy, then reset/abort/destroy, in read_and_close, after abort or close), locking on: the same data under each id as on the files handler, no lock left behind, the new id locked and the old one released at once
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
// Each runs as one request; afterwards every ID line's session is read by
// a request of its own (then_each_id).
$cases = [
    'false, after a write' => 'session_start(); echo "ID_OLD=", session_id(), "\n"; $_SESSION["a"] = 1;
        var_dump(session_regenerate_id(false)); $_SESSION["b"] = 2; echo "ID_NEW=", session_id(), "\n";',
    'true, after a write' => 'session_start(); echo "ID_OLD=", session_id(), "\n"; $_SESSION["a"] = 1;
        var_dump(session_regenerate_id(true)); $_SESSION["b"] = 2; echo "ID_NEW=", session_id(), "\n";',
    'true, of a stored session, no write' => 'session_start(); $_SESSION["x"] = 1; $id = session_id(); session_write_close();
        session_id($id); session_start(); echo "ID_OLD=$id\n";
        var_dump(session_regenerate_id(true)); echo "ID_NEW=", session_id(), "\n";',
    'false, of a stored session, no write' => 'session_start(); $_SESSION["x"] = 1; $id = session_id(); session_write_close();
        session_id($id); session_start(); echo "ID_OLD=$id\n";
        var_dump(session_regenerate_id(false)); echo "ID_NEW=", session_id(), "\n";',
    'default (false), new empty session' => 'session_start(); echo "ID_OLD=", session_id(), "\n";
        var_dump(session_regenerate_id()); echo "ID_NEW=", session_id(), "\n";',
    'twice' => 'session_start(); echo "ID_A=", session_id(), "\n"; $_SESSION["a"] = 1;
        var_dump(session_regenerate_id(true)); echo "ID_B=", session_id(), "\n"; $_SESSION["b"] = 1;
        var_dump(session_regenerate_id(false)); echo "ID_C=", session_id(), "\n"; $_SESSION["c"] = 1;',
    'strict mode, true' => 'ini_set("session.use_strict_mode", 1); session_start(); $_SESSION["x"] = 1; echo "ID_OLD=", session_id(), "\n";
        var_dump(session_regenerate_id(true)); echo "ID_NEW=", session_id(), "\n";',
    'then session_reset()' => 'session_start(); $_SESSION["x"] = 1; echo "ID_OLD=", session_id(), "\n";
        session_regenerate_id(false); $_SESSION["y"] = 1; var_dump(session_reset(), $_SESSION);
        $_SESSION["z"] = 1; echo "ID_NEW=", session_id(), "\n";',
    'then session_abort()' => 'session_start(); $_SESSION["x"] = 1; echo "ID_OLD=", session_id(), "\n";
        session_regenerate_id(false); $_SESSION["y"] = 1; echo "ID_NEW=", session_id(), "\n"; var_dump(session_abort());',
    'true, then session_destroy()' => 'session_start(); $_SESSION["x"] = 1; echo "ID_OLD=", session_id(), "\n";
        session_regenerate_id(true); $_SESSION["y"] = 1; echo "ID_NEW=", session_id(), "\n"; var_dump(session_destroy());',
    'after session_destroy() and a new session_start()' => 'session_start(); $_SESSION["x"] = 1; echo "ID_A=", session_id(), "\n";
        session_destroy(); session_start(); $_SESSION["y"] = 1; echo "ID_B=", session_id(), "\n";
        var_dump(session_regenerate_id(true)); echo "ID_C=", session_id(), "\n";',
    'in read_and_close' => 'session_start(); $_SESSION["x"] = 1; $id = session_id(); session_write_close();
        session_id($id); session_start(["read_and_close" => true]); echo "ID=$id\n";
        var_dump(session_regenerate_id(true), session_id() === $id);',
    'after session_abort()' => 'session_start(); $_SESSION["x"] = 1; echo "ID=", session_id(), "\n"; session_abort();
        var_dump(session_regenerate_id(true));',
    'after session_write_close()' => 'session_start(); $_SESSION["x"] = 1; echo "ID=", session_id(), "\n"; session_write_close();
        var_dump(session_regenerate_id(true));',
];
foreach ($cases as $name => $code) {
    echo "-- $name\n";
    same_as_files(on_memcast_and_files($ini, fn($request) => then_each_id($request, $code)));
}

// While the regenerating request goes on: its new id is locked (a request
// for it waits and then sees all it wrote), its old id is free at once.
foreach ([false, true] as $delete) {
    echo "-- concurrent requests, session_regenerate_id(", var_export($delete, true), ")\n";
    same_as_files(on_memcast_and_files($ini, function ($request, $start) use ($delete) {
        $marker = tempnam(sys_get_temp_dir(), 'memcast');
        unlink($marker);
        $a = $start('session_start(); $_SESSION["x"] = 1; $old = session_id(); session_write_close();
            session_id($old); session_start(); $_SESSION["y"] = 1;
            session_regenerate_id(' . var_export($delete, true) . ');
            file_put_contents("' . $marker . '", "$old " . session_id());
            usleep(800000);
            $_SESSION["late"] = 1;
            echo "A ends at ", microtime(true), "\n";');
        [$old, $new] = explode(' ', wait_for_file($marker));
        unlink($marker);
        $read = 'session_start(); echo json_encode($_SESSION), " at ", microtime(true), "\n";';
        $on_old = $request('session_id("' . $old . '"); ' . $read);
        $on_new = $request('session_id("' . $new . '"); ' . $read);
        $a = finish($a);
        $at = fn($s) => (float) preg_replace('/.* at /s', '', trim($s));
        return 'old id: ' . preg_replace('/ at .*/s', '', $on_old) . ($at($on_old) < $at($a) ? "  before A ended\n" : "  AFTER A ended\n")
            . 'new id: ' . preg_replace('/ at .*/s', '', $on_new) . ($at($on_new) < $at($a) ? "  BEFORE A ended\n" : "  after A ended\n");
    }));
}
?>
--EXPECTF--
-- false, after a write
bool(true)
ID_OLD: {"a":1}
ID_NEW: {"a":1,"b":2}
== same on the files handler
-- true, after a write
bool(true)
ID_OLD: []
ID_NEW: {"a":1,"b":2}
== same on the files handler
-- true, of a stored session, no write
bool(true)
ID_OLD: []
ID_NEW: {"x":1}
== same on the files handler
-- false, of a stored session, no write
bool(true)
ID_OLD: {"x":1}
ID_NEW: {"x":1}
== same on the files handler
-- default (false), new empty session
bool(true)
ID_OLD: []
ID_NEW: []
== same on the files handler
-- twice
bool(true)
bool(true)
ID_A: []
ID_B: {"a":1,"b":1}
ID_C: {"a":1,"b":1,"c":1}
== same on the files handler
-- strict mode, true
bool(true)
ID_OLD: []
ID_NEW: {"x":1}
== same on the files handler
-- then session_reset()
bool(true)
array(0) {
}
ID_OLD: {"x":1}
ID_NEW: {"z":1}
== same on the files handler
-- then session_abort()
bool(true)
ID_OLD: {"x":1}
ID_NEW: []
== same on the files handler
-- true, then session_destroy()
bool(true)
ID_OLD: []
ID_NEW: []
== same on the files handler
-- after session_destroy() and a new session_start()
bool(true)
ID_A: []
ID_B: []
ID_C: {"y":1}
== same on the files handler
-- in read_and_close

Warning: session_regenerate_id(): Session ID cannot be regenerated when there is no active session in Command line code on line %d
bool(false)
bool(true)
ID: {"x":1}
== same on the files handler
-- after session_abort()

Warning: session_regenerate_id(): Session ID cannot be regenerated when there is no active session in Command line code on line %d
bool(false)
ID: []
== same on the files handler
-- after session_write_close()

Warning: session_regenerate_id(): Session ID cannot be regenerated when there is no active session in Command line code on line %d
bool(false)
ID: {"x":1}
== same on the files handler
-- concurrent requests, session_regenerate_id(false)
old id: {"x":1,"y":1}  before A ended
new id: {"x":1,"y":1,"late":1}  after A ended
== same on the files handler
-- concurrent requests, session_regenerate_id(true)
old id: []  before A ended
new id: {"x":1,"y":1,"late":1}  after A ended
== same on the files handler
