--TEST--
memcast is a registered save handler with every memcast.* setting at its default
--FILE--
<?php
$handler_set = ini_set('session.save_handler', 'memcast') !== false;
var_dump(extension_loaded('memcast'));
var_dump(in_array('session', (new ReflectionExtension('memcast'))->getDependencies() ? array_keys((new ReflectionExtension('memcast'))->getDependencies()) : []));
ob_start();
phpinfo(INFO_MODULES);
$info = ob_get_clean();
preg_match('/Registered save handlers => (.*)/', $info, $m);
var_dump(in_array('memcast', explode(' ', trim($m[1]))));
var_dump($handler_set);
foreach (ini_get_all('memcast') as $name => $v) {
    echo "$name=", $v['global_value'], "\n";
}
?>
--EXPECT--
bool(true)
bool(true)
bool(true)
bool(true)
memcast.accept_key_file=
memcast.compress_threshold=1024
memcast.connect_timeout_ms=100
memcast.encrypt=0
memcast.io_timeout_ms=500
memcast.key_file=
memcast.linger_ms=1000
memcast.lock_expire=0
memcast.lock_retries=100
memcast.lock_scope=cluster
memcast.lock_wait_max=200
memcast.lock_wait_min=10
memcast.locking=1
memcast.max_session_size=4M
memcast.migrate_from=off
memcast.migrate_prefix=
memcast.pgm_rate_kbps=100000
memcast.pgm_recovery_ms=2000
memcast.prefix=memcast.sess.
memcast.publish=
memcast.relay_timeout_ms=50
memcast.retry_interval=2
memcast.seal=1
memcast.send_hwm=10000
memcast.warm_check=1
