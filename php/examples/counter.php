<?php
// A page that reads a counter from the session, works a little and writes
// it back: behind a round-robin load balancer, concurrent requests of one
// session on different hosts still count every visit, since memcast's
// session lock is cluster-wide (memcast.lock_scope = cluster, the default).
// tests/cluster_lock.rs runs a page like it, 60 requests at once over 3 hosts.
ob_start(); // a warning must not send the headers before the status is set
if (!session_start()) {
    http_response_code(503);
    echo "no session (see the warning in the log)\n";
    exit;
}
$n = ($_SESSION['n'] ?? 0) + 1;
usleep(20000); // the page's work, while this session stays locked
$_SESSION['n'] = $n;
if (!session_write_close()) {
    http_response_code(500);
    echo "not written (see the warning in the log)\n";
    exit;
}
printf("visit %d\n", $n);
