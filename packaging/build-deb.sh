#!/usr/bin/env bash
# Builds target/deb/memcast_VERSION_ARCH.deb with dpkg-deb from the release
# build: the same files `make install` puts in place, at Debian's paths.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/deb}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
ext_dir=$(php-config --extension-dir)
php_version=$(php-config --version | cut -d. -f1,2)
root="$out/memcast_${version}_${arch}"
rm -rf "$root"
install -D -m 0644 target/release/libmemcast.so "$root$ext_dir/libmemcast.so"
install -D -m 0644 packaging/memcast.ini "$root/etc/php/$php_version/mods-available/memcast.ini"
install -D -m 0755 target/release/memcastd "$root/usr/bin/memcastd"
install -D -m 0644 packaging/memcastd.toml "$root/etc/memcast/memcastd.toml"
install -d "$root/lib/systemd/system"
sed 's|@BINDIR@|/usr/bin|g' packaging/memcastd.service.in > "$root/lib/systemd/system/memcastd.service"
chmod 0644 "$root/lib/systemd/system/memcastd.service"
strip --strip-debug "$root$ext_dir/libmemcast.so" "$root/usr/bin/memcastd"
install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: memcast
Version: $version
Architecture: $arch
Maintainer: memcast developers <memcast@localhost>
Depends: php$php_version-common, libzmq5, memcached
Section: php
Priority: optional
Installed-Size: $size
Description: PHP sessions replicated to every host over reliable multicast
 memcast is a PHP session save handler (session.save_handler = memcast) that
 reads sessions from the local memcached, fails over down a server list, and
 publishes every write once onto a ZeroMQ PGM multicast group; memcastd on
 every host applies the writes to its memcached, repairs what the network
 lost and refills a restarted memcached from a peer.
CONTROL
cat > "$root/DEBIAN/conffiles" <<CONFFILES
/etc/memcast/memcastd.toml
/etc/php/$php_version/mods-available/memcast.ini
CONFFILES
cat > "$root/DEBIAN/postinst" <<POSTINST
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    getent group memcast >/dev/null || groupadd --system memcast
    getent passwd memcast >/dev/null || useradd --system --gid memcast --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin memcast
    chgrp memcast /etc/memcast && chmod 0750 /etc/memcast
    if command -v phpenmod >/dev/null; then phpenmod -v $php_version memcast; fi
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
exit 0
POSTINST
cat > "$root/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
if [ "\$1" = remove ]; then
    if [ -d /run/systemd/system ]; then systemctl stop memcastd.service || true; fi
    if command -v phpdismod >/dev/null; then phpdismod -v $php_version memcast; fi
fi
exit 0
PRERM
cat > "$root/DEBIAN/postrm" <<POSTRM
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group --build "$root" "$out/" >/dev/null
echo "$out/memcast_${version}_${arch}.deb"
