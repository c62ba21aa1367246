--TEST--
session.save_path as other handlers write it: weights, PERSISTENT=, pecl-memcache's tcp://...?options, IPv6, unix sockets; anything else is one error with the format, when set
--FILE--
<?php
require __DIR__ . '/memcast.inc';

/** memcached with $listen args (a unix socket, an IPv6 address); stopped at exit. */
function mc_start_with(array $listen, string $probe): array {
    $cmd = array_merge(['memcached'], $listen, MEMCACHED_ARGS);
    if (trim((string) shell_exec('id -u')) === '0') {
        array_push($cmd, '-u', 'root');
    }
    $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
    register_shutdown_function(fn() => mc_stop(['proc' => $proc]));
    for ($i = 0; $i < 200; $i++) {
        $c = @stream_socket_client($probe, $errno, $errstr, 0.05);
        if ($c) {
            fwrite($c, "set memcast:warm 0 0 1\r\n1\r\n");
            fgets($c);
            fclose($c);
            return ['proc' => $proc];
        }
        usleep(10000);
    }
    throw new RuntimeException("memcached did not start at $probe");
}

function raw_get(string $probe, string $key): ?string {
    $c = stream_socket_client($probe, $errno, $errstr, 1);
    fwrite($c, "get $key\r\n");
    $out = '';
    while (!feof($c) && !str_ends_with($out, "END\r\n")) {
        $out .= fread($c, 65536);
    }
    fclose($c);
    return preg_match('/^VALUE \S+ \d+ \d+\r\n/', $out) ? 'held' : null;
}

$dir = sys_get_temp_dir() . '/memcast-050-' . getmypid();
@mkdir($dir);
$sock = "$dir/memcached.sock";
mc_start_with(['-s', $sock], "unix://$sock");
$tcp = mc_start();
$port = $tcp['port'];
$v6port = free_port();
mc_start_with(['-l', '::1', '-p', (string) $v6port], "tcp://[::1]:$v6port");

$write = 'session_id("abc"); session_start(); $_SESSION["n"] = 7; var_dump(session_write_close());';
$read = 'session_id("abc"); session_start(); var_dump($_SESSION["n"] ?? null);';
$paths = [
    'unix socket path' => [$sock, "unix://$sock"],
    'unix:// url' => ["unix://$sock", "unix://$sock"],
    'php-memcached weight and PERSISTENT' => ["\"PERSISTENT=pool 127.0.0.1:$port:1\"", "tcp://127.0.0.1:$port"],
    'pecl-memcache options' => ["\"tcp://127.0.0.1:$port?weight=1&timeout=2.5\"", "tcp://127.0.0.1:$port"],
    'IPv6' => ["[::1]:$v6port", "tcp://[::1]:$v6port"],
];
foreach ($paths as $what => [$path, $probe]) {
    echo "== $what\n";
    $key = 'memcast.sess.' . md5($what);
    $ini = ['session.save_path' => $path, 'memcast.prefix' => "memcast.sess." . md5($what)];
    echo str_replace([$sock, (string) $port, (string) $v6port], ['SOCK', 'PORT', 'V6PORT'], request($ini, $write));
    echo request($ini, $read);
    echo "memcached holds it: ", raw_get($probe, "memcast.sess." . md5($what) . "abc") ?? 'no', "\n";
}

echo "== a save path memcast cannot use, at start-up\n";
echo request(['session.save_path' => 'udp://127.0.0.1:1'], 'var_dump(session_start());');
echo "== refused by ini_set() and session_save_path() while memcast is the handler\n";
echo request(['session.save_path' => "127.0.0.1:$port"],
    'var_dump(ini_set("session.save_path", "unix://relative.sock")); var_dump(ini_get("session.save_path") === "127.0.0.1:' . $port . '");'
    . ' session_save_path("h:1:2:3"); var_dump(ini_get("session.save_path") === "127.0.0.1:' . $port . '");'
    . ' var_dump(ini_set("session.save_path", "127.0.0.1:1:5") !== false);');
echo "== not checked for another handler\n";
echo request(['session.save_handler' => 'files', 'session.save_path' => sys_get_temp_dir()], 'var_dump(ini_set("session.save_path", sys_get_temp_dir()) !== false);');
@unlink($sock);
@rmdir($dir);
?>
--EXPECTF--
== unix socket path
bool(true)
int(7)
memcached holds it: held
== unix:// url
bool(true)
int(7)
memcached holds it: held
== php-memcached weight and PERSISTENT

Notice: PHP Startup: memcast: session.save_path: PERSISTENT=pool, weight 1 of 127.0.0.1:PORT ignored: memcast tries the servers in the order given (no weights), keeps its connections open in every process, and takes its timeouts from memcast.connect_timeout_ms and memcast.io_timeout_ms in Unknown on line 0
bool(true)

Notice: PHP Startup: memcast: session.save_path: PERSISTENT=pool, weight 1 of 127.0.0.1:%d ignored: %s
int(7)
memcached holds it: held
== pecl-memcache options

Notice: PHP Startup: memcast: session.save_path: weight=1 of tcp://127.0.0.1:PORT, timeout=2.5 of tcp://127.0.0.1:PORT ignored: %s
bool(true)

Notice: PHP Startup: memcast: session.save_path: weight=1 of %s ignored: %s
int(7)
memcached holds it: held
== IPv6
bool(true)
int(7)
memcached holds it: held
== a save path memcast cannot use, at start-up

Warning: PHP Startup: memcast: session.save_path "udp://127.0.0.1:1": server address "udp://127.0.0.1:1": udp:// is not a memcached transport (tcp:// or unix://); expected "host:port, host:port, ..." (first the local memcached, then the failover list); also [IPv6]:port, /path/to/memcached.sock, unix:///path/to/memcached.sock, and the other handlers' host:port:weight, PERSISTENT=id and tcp://host:port?weight=N&timeout=N in Unknown on line 0

Warning: session_start(): memcast: session.save_path "udp://127.0.0.1:1": %s in Command line code on line 1

Warning: session_start(): Failed to initialize storage module: memcast (path: udp://127.0.0.1:1) in Command line code on line 1
bool(false)
== refused by ini_set() and session_save_path() while memcast is the handler

Warning: ini_set(): memcast: session.save_path "unix://relative.sock": %s in Command line code on line 1
bool(false)
bool(true)

Warning: session_save_path(): memcast: session.save_path "h:1:2:3": server address "h:1:2:3": too many ':' (host:port, or host:port:weight); expected "host:port, %s in Command line code on line 1
bool(true)

Notice: ini_set(): memcast: session.save_path: weight 5 of 127.0.0.1:1 ignored: %s in Command line code on line 1
bool(true)
== not checked for another handler
bool(true)
