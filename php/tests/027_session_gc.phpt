--TEST--
session_gc(): false and a warning with no active session, an int inside one; a session older than session.gc_maxlifetime is gone after it, as on the files handler (memcached's own expiry removed it, so memcast counts 0 where files counts the file it deleted)
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
$ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'session.gc_maxlifetime' => 1];
$out = on_memcast_and_files($ini, function ($request) {
    $out = $request('var_dump(session_gc());
        session_start(); $_SESSION["x"] = 1; echo "ID=", session_id(), "\n";
        var_dump(session_gc());');
    preg_match('/ID=(\S+)/', $out, $m);
    $out = preg_replace('/ID=\S+\n/', '', $out);
    usleep(2500000); // past the 1 s lifetime, whole seconds on memcached's clock
    $out .= $request('session_start(); $n = session_gc(); var_dump(is_int($n)); echo "collected=$n\n"; session_write_close();
        session_id("' . $m[1] . '"); session_start(); var_dump($_SESSION);');
    return $out;
});
// The count is the one difference: memcached expired the session itself.
same_as_files(['memcast' => $out['memcast'], 'files' => str_replace('collected=1', 'collected=0', $out['files'])]);
echo str_contains($out['files'], 'collected=1') ? "files collected 1\n" : "files collected ?\n";
?>
--EXPECTF--
Warning: session_gc(): Session cannot be garbage collected when there is no active session in Command line code on line %d
bool(false)
int(0)
bool(true)
collected=0
array(0) {
}
== same on the files handler
files collected 1
