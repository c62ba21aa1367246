--TEST--
a server that timed out is skipped for memcast.retry_interval, then tried again
--FILE--
<?php
require __DIR__ . '/memcast.inc';
ob_start(); // output must not count as sent headers
$live = mc_start();
// A server that accepts connections and never answers: each attempt to use
// it is one connection waiting in this listener's backlog.
$silent = stream_socket_server('tcp://127.0.0.1:0');
$port = (int) substr(strrchr(stream_socket_get_name($silent, false), ':'), 1);
ini_set('session.save_handler', 'memcast');
ini_set('session.save_path', "127.0.0.1:$port, 127.0.0.1:{$live['port']}");
ini_set('memcast.io_timeout_ms', 100);
ini_set('memcast.retry_interval', '1500ms');

function cycle(int $i): void {
    session_start();
    $_SESSION['i'] = $i;
    session_write_close();
}
function attempts($silent): int {
    $n = 0;
    while ($c = @stream_socket_accept($silent, 0.2)) {
        fclose($c);
        $n++;
    }
    return $n;
}
cycle(1);              // tries the silent server, times out, fails over
cycle(2);              // within the retry interval: not tried
cycle(3);
var_dump(attempts($silent));
usleep(1600000);       // the interval has passed
cycle(4);              // tried again
var_dump(attempts($silent));
var_dump(mc_stat($live['port'], 'cmd_set') >= 4); // every write still landed
echo "done\n";
?>
--EXPECT--
int(1)
int(1)
bool(true)
done
