#!/usr/bin/env bash
# Builds OUT/memcast_VERSION_ARCH.deb with dpkg-deb from a release build for
# one PHP: the same files `make install` puts in place, at Debian's paths.
#   PHP_CONFIG  the php-config of the PHP the extension was built for
#               (default php-config): extension dir, /etc/php/X.Y, phpapi-N
#   BUILD_DIR   where libmemcast.so and memcastd are (default target/release)
# The package depends on phpapi-N (the PHP API the extension was built for:
# another PHP refuses to load it, so dpkg refuses the package there), on
# php X.Y's common package, and on the shared libraries the binaries link.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/deb}
php_config=${PHP_CONFIG:-php-config}
build_dir=${BUILD_DIR:-target/release}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
ext_dir=$("$php_config" --extension-dir)
php_version=$("$php_config" --version | cut -d. -f1,2)
phpapi=$("$php_config" --phpapi 2>/dev/null || basename "$ext_dir")
# Debian 13 merged /lib into /usr/lib: units go to /usr/lib/systemd/system there.
unit_dir=/lib/systemd/system
debian_major=$(. /etc/os-release && echo "${VERSION_ID:-0}" | cut -d. -f1)
if [ "$debian_major" -ge 13 ] 2>/dev/null; then unit_dir=/usr/lib/systemd/system; fi
doc_dir=/usr/share/doc/memcast
root="$out/memcast_${version}_${arch}"
rm -rf "$root"
install -D -m 0644 "$build_dir/libmemcast.so" "$root$ext_dir/libmemcast.so"
install -D -m 0644 php/memcast.ini "$root/etc/php/$php_version/mods-available/memcast.ini"
install -D -m 0755 "$build_dir/memcastd" "$root/usr/bin/memcastd"
install -D -m 0644 packaging/memcastd.toml "$root/etc/memcast/memcastd.toml"
install -D -m 0644 packaging/60-memcast.conf "$root/usr/lib/sysctl.d/60-memcast.conf"
install -d "$root$unit_dir"
sed 's|@BINDIR@|/usr/bin|g' packaging/memcastd.service.in > "$root$unit_dir/memcastd.service"
chmod 0644 "$root$unit_dir/memcastd.service"
install -D -m 0644 packaging/copyright "$root$doc_dir/copyright"
install -d "$root$doc_dir"
gzip -9n < packaging/changelog > "$root$doc_dir/changelog.gz"
chmod 0644 "$root$doc_dir/changelog.gz"
install -d "$root/usr/share/man/man8"
gzip -9n < packaging/memcastd.8 > "$root/usr/share/man/man8/memcastd.8.gz"
chmod 0644 "$root/usr/share/man/man8/memcastd.8.gz"
# As dh_strip: no debug info, no symbols beyond the dynamic ones PHP and
# ld.so use (get_module stays), no .comment/.note sections.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root$ext_dir/libmemcast.so" "$root/usr/bin/memcastd"
# The shared libraries both binaries link (libc6, libzmq5, libgcc-s1), with
# the versions their symbols need; PHP's own symbols in the extension are
# resolved by the php binary that loads it (phpapi-N above).
shlibs=$(tmp=$(mktemp -d) && mkdir "$tmp/debian" && printf 'Source: memcast\n\nPackage: memcast\nArchitecture: any\n' > "$tmp/debian/control" \
    && (cd "$tmp" && dpkg-shlibdeps -O --warnings=0 "$OLDPWD/$root$ext_dir/libmemcast.so" "$OLDPWD/$root/usr/bin/memcastd" 2>/dev/null) \
    | sed -n 's/^shlibs:Depends=//p'; rm -rf "$tmp")
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no libraries" >&2; exit 1; }
install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: memcast
Version: $version
Architecture: $arch
Maintainer: memcast developers <maintainers@users.noreply.r-seed-64c22d60.example>
Depends: phpapi-$phpapi, php$php_version-common, $shlibs, memcached
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
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # Now, not only from the next boot (systemd-sysctl applies it then).
        sysctl -q -p /usr/lib/sysctl.d/60-memcast.conf || true
    fi
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
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
dpkg-deb --root-owner-group --build "$root" "$out/" >/dev/null
echo "$out/memcast_${version}_${arch}.deb"
