--TEST--
50 concurrent requests increment one session: 50 with locking on; fewer without (the lock matters)
--FILE--
<?php
require __DIR__ . '/memcast.inc';
$mc = mc_start();
foreach ([1, 0] as $locking) {
    $ini = ['session.save_path' => "127.0.0.1:{$mc['port']}", 'memcast.locking' => $locking];
    $id = "counter{$locking}0000000000000000000000000";
    $code = 'session_id("' . $id . '"); $t = hrtime(true); session_start(); $w = (hrtime(true) - $t) / 1e6;
             $n = ($_SESSION["n"] ?? 0) + 1; usleep(20000); $_SESSION["n"] = $n; session_write_close();
             printf("wait=%.1f\n", $w);';
    $running = [];
    for ($i = 0; $i < 50; $i++) {
        $running[] = start_request($ini, $code);
    }
    $waits = [];
    foreach ($running as $r) {
        $out = finish($r);
        if (preg_match('/wait=([\d.]+)/', $out, $m)) { $waits[] = (float) $m[1]; }
        // Without the lock, requests that all began from a miss race to
        // create the session: the losers are told (a warning), not silent.
        if (str_contains($out, 'Warning') && ($locking || !str_contains($out, 'session not stored'))) { echo $out; }
    }
    sort($waits);
    $final = trim(request($ini, 'session_id("' . $id . '"); session_start(["read_and_close" => true]); echo $_SESSION["n"];'));
    if ($locking) {
        var_dump((int) $final);
        printf("lock waits (ms) over 50 requests: p50=%.1f p90=%.1f max=%.1f\n",
            $waits[24], $waits[44], end($waits));
    } else {
        var_dump((int) $final < 50);
    }
}
?>
--EXPECTF--
int(50)
lock waits (ms) over 50 requests: p50=%f p90=%f max=%f
bool(true)
