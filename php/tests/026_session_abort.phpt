--TEST--
session_abort() with locking on: the changes are dropped, the lock is released at once (a waiting request goes on before the aborting one ends), session_start() again in the same request locks and reads the stored data; as on the files handler
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}"];

echo "-- abort, start again, abort with nothing active\n";
same_as_files(on_memcast_and_files($ini, fn($request) => then_each_id($request, '
    var_dump(session_abort());
    session_start(); $_SESSION["kept"] = 1; $id = session_id(); session_write_close();
    session_id($id); session_start(); $_SESSION["dropped"] = 1;
    var_dump(session_abort(), session_status() === PHP_SESSION_NONE, $_SESSION);
    var_dump(session_start(), $_SESSION);
    $_SESSION["second_start"] = 1;
    var_dump(session_abort(), session_abort());
    session_start(); $_SESSION["third_start"] = 1;
    echo "ID=$id\n";
')));

echo "-- a request waiting for the lock goes on at the abort\n";
same_as_files(on_memcast_and_files($ini, function ($request, $start) {
    $marker = tempnam(sys_get_temp_dir(), 'memcast');
    unlink($marker);
    $a = $start('session_start(); $_SESSION["v"] = 1; $id = session_id(); session_write_close();
        session_id($id); session_start(); $_SESSION["v"] = 2;
        file_put_contents("' . $marker . '", $id);
        usleep(500000);
        session_abort();
        usleep(1000000);
        echo "A ends at ", microtime(true), "\n";');
    $id = wait_for_file($marker);
    unlink($marker);
    $b = $request('session_id("' . $id . '"); session_start(); echo json_encode($_SESSION), " at ", microtime(true), "\n";');
    $a = finish($a);
    $at = fn($s) => (float) preg_replace('/.* at /s', '', trim($s));
    return preg_replace('/ at .*/s', '', $b) . ($at($b) < $at($a) ? " before A ended\n" : " AFTER A ended\n");
}));
?>
--EXPECT--
-- abort, start again, abort with nothing active
bool(false)
bool(true)
bool(true)
array(2) {
  ["kept"]=>
  int(1)
  ["dropped"]=>
  int(1)
}
bool(true)
array(1) {
  ["kept"]=>
  int(1)
}
bool(true)
bool(false)
ID: {"kept":1,"third_start":1}
== same on the files handler
-- a request waiting for the lock goes on at the abort
{"v":1} before A ended
== same on the files handler
