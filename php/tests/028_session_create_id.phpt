--TEST--
session_create_id() outside and inside an active session (then through memcast's create_sid), with a prefix, a bad prefix, other id lengths and alphabets; a created id not in storage is refused in strict mode; as on the files handler
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];
// PHP 8.4 deprecates session.sid_length and sid_bits_per_character (still
// honoured): @ keeps the output the same on 8.2 and 8.4.
$describe = 'function describe($id) { return $id === false ? "false" : strlen($id) . " chars, alphabet " . (preg_match("/^[0-9a-f]+$/", $id) ? "hex" : (preg_match("/^[0-9a-v]+$/", $id) ? "0-9a-v" : (preg_match("/^[0-9a-zA-Z,-]+$/", $id) ? "0-9a-zA-Z,-" : "other"))); }';
same_as_files(on_memcast_and_files($ini, fn($request) =>
    $request($describe . '
        echo describe(session_create_id()), "\n";
        $p = session_create_id("pre-fix,"); echo substr($p, 0, 8), " ", describe(substr($p, 8)), "\n";
        var_dump(session_create_id("bad!"));
        session_start(); $_SESSION["x"] = 1;
        $ids = [];
        for ($i = 0; $i < 20; $i++) { $ids[] = session_create_id(); }
        echo describe($ids[0]), ", ", count(array_unique($ids)), " distinct, current id among them: ", var_export(in_array(session_id(), $ids, true), true), "\n";
        session_write_close();
        @ini_set("session.sid_length", "48"); @ini_set("session.sid_bits_per_character", "5");
        echo describe(session_create_id()), "\n";
        session_start(); $p = session_create_id("p-"); echo substr($p, 0, 2), " ", describe(substr($p, 2)), "\n"; session_write_close();
        @ini_set("session.sid_bits_per_character", "6"); session_start(); echo describe(session_create_id()), "\n"; session_write_close();
        ini_set("session.use_strict_mode", "1");
        $new = session_create_id(); session_id($new); session_start();
        echo "strict mode keeps the created id: ", var_export(session_id() === $new, true), "\n";
    ', ['session.use_strict_mode' => 0])));
?>
--EXPECTF--
32 chars, alphabet hex
pre-fix, 32 chars, alphabet hex

Warning: session_create_id(): Prefix cannot contain special characters. Only the A-Z, a-z, 0-9, "-", and "," characters are allowed in Command line code on line %d
bool(false)
32 chars, alphabet hex, 20 distinct, current id among them: false
48 chars, alphabet 0-9a-v
p- 48 chars, alphabet 0-9a-v
48 chars, alphabet 0-9a-zA-Z,-
strict mode keeps the created id: false
== same on the files handler
