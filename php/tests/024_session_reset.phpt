--TEST--
session_reset() with locking on: the request keeps its lock, reads the stored data again at once, and what it writes afterwards is stored; a concurrent request waits for it; as on the files handler
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];

echo "-- php-src's session_reset_basic, then a write and the next request\n";
same_as_files(on_memcast_and_files($ini, fn($request) => then_each_id($request, '
    session_start();
    $id = session_id();
    $_SESSION["foo"] = 123;
    session_commit();
    session_id($id);
    session_start();
    $_SESSION["bar"] = 456;
    $t = microtime(true);
    var_dump(session_reset(), $_SESSION);
    echo microtime(true) - $t < 1 ? "reset at once\n" : "reset WAITED\n";
    $_SESSION["after_reset"] = 1;
    var_dump(session_reset(), $_SESSION);
    $_SESSION["after_second_reset"] = 2;
    var_dump(session_status() === PHP_SESSION_ACTIVE, session_write_close());
    echo "ID=$id\n";
    var_dump(session_reset());
')));

echo "-- a concurrent request waits until the resetting request ends\n";
same_as_files(on_memcast_and_files($ini, function ($request, $start) {
    $marker = tempnam(sys_get_temp_dir(), 'memcast');
    unlink($marker);
    $a = $start('session_start(); $_SESSION["a"] = 1; $id = session_id(); session_write_close();
        session_id($id); session_start(); session_reset();
        file_put_contents("' . $marker . '", $id);
        usleep(800000);
        $_SESSION["written_after_reset"] = 1;');
    $id = wait_for_file($marker);
    unlink($marker);
    $b = $request('session_id("' . $id . '"); session_start(); echo json_encode($_SESSION), "\n";');
    return finish($a) . $b;
}));
?>
--EXPECT--
-- php-src's session_reset_basic, then a write and the next request
bool(true)
array(1) {
  ["foo"]=>
  int(123)
}
reset at once
bool(true)
array(1) {
  ["foo"]=>
  int(123)
}
bool(true)
bool(true)
bool(false)
ID: {"foo":123,"after_second_reset":2}
== same on the files handler
-- a concurrent request waits until the resetting request ends
{"a":1,"written_after_reset":1}
== same on the files handler
