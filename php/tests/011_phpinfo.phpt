--TEST--
phpinfo() shows memcast, its counters and every memcast.* setting
--INI--
memcast.prefix=shop.sess.
--FILE--
<?php
ob_start();
phpinfo(INFO_MODULES);
$info = ob_get_clean();
$section = substr($info, strpos($info, "\nmemcast\n"));
foreach (['memcast support => enabled', 'Save handler => memcast', 'PGM transport in libzmq => yes',
          'memcast.publish => no value => no value', 'memcast.prefix => shop.sess. => shop.sess.',
          'memcast.retry_interval => 2 => 2', 'memcast.key_file => no value => no value',
          'memcast.connect_timeout_ms => 100 => 100', 'memcast.io_timeout_ms => 500 => 500',
          'memcast.pgm_rate_kbps => 100000 => 100000', 'memcast.pgm_recovery_ms => 2000 => 2000',
          'memcast.send_hwm => 10000 => 10000', 'memcast.linger_ms => 1000 => 1000',
          'memcast.relay_timeout_ms => 50 => 50'] as $line) {
    echo str_contains($section, $line) ? "ok  " : "MISSING  ", $line, "\n";
}
?>
--EXPECT--
ok  memcast support => enabled
ok  Save handler => memcast
ok  PGM transport in libzmq => yes
ok  memcast.publish => no value => no value
ok  memcast.prefix => shop.sess. => shop.sess.
ok  memcast.retry_interval => 2 => 2
ok  memcast.key_file => no value => no value
ok  memcast.connect_timeout_ms => 100 => 100
ok  memcast.io_timeout_ms => 500 => 500
ok  memcast.pgm_rate_kbps => 100000 => 100000
ok  memcast.pgm_recovery_ms => 2000 => 2000
ok  memcast.send_hwm => 10000 => 10000
ok  memcast.linger_ms => 1000 => 1000
ok  memcast.relay_timeout_ms => 50 => 50
