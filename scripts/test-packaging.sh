#!/usr/bin/env bash
# The install and the Debian package, checked as an operator would use them:
#  1. make install DESTDIR=tmp puts exactly the five files in place; PHP loads
#     the extension from there; systemd-analyze verify accepts the unit;
#     make uninstall removes exactly those files.
#  2. make deb: dpkg-deb --info (dependencies) and --contents (the same
#     files); dpkg -i works and `php -m` lists memcast, `memcastd --version`
#     runs from /usr/bin; the package is purged again at the end.
# Needs root for step 2 (dpkg); fails loudly without it.
set -euo pipefail
# Under pipefail, `cmd | grep -q` fails when grep exits at its first match
# while cmd is still writing (SIGPIPE): `php -m | grep -qx memcast` failed
# 3 times in 300 here. So grep reads all of its input: `grep ... >/dev/null`.
cd "$(dirname "$0")/.."
fail() { echo "test-packaging: FAIL: $*" >&2; exit 1; }
ok() { echo "test-packaging: ok: $*"; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i of the package)"
stage=$(mktemp -d)
installed_pkg=""
cleanup() {
    rm -rf "$stage"
    if [ -n "$installed_pkg" ]; then dpkg --purge memcast >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The README's commands are make targets; a Makefile edit must not lose one.
for t in demo test bench fuzz install uninstall deb lint deps; do
    make -n "$t" >/dev/null 2>&1 || fail "make $t: no such target (the README names it)"
    [ -n "$(make -n "$t" 2>/dev/null)" ] || fail "make $t does nothing"
done
ok "the README's make targets exist"

ext_dir=$(php-config --extension-dir)
ini_dir=$(php-config --ini-dir)
make -s install DESTDIR="$stage" >/dev/null
expected=$(printf '%s\n' "$ext_dir/libmemcast.so" "$ini_dir/memcast.ini" /usr/local/bin/memcastd \
    /etc/memcast/memcastd.toml /etc/systemd/system/memcastd.service | sort)
actual=$(cd "$stage" && find . -type f -o -type l | sed 's|^\.||' | sort)
[ "$actual" = "$expected" ] || fail "make install put other files: $(diff <(echo "$expected") <(echo "$actual") || true)"
ok "make install DESTDIR: exactly $(echo "$actual" | wc -l) files"
php -n -d extension="$stage$ext_dir/libmemcast.so" -m | grep -x memcast >/dev/null || fail "php -m does not list memcast from $stage$ext_dir"
# The installed ini, as PHP reads it: loads the extension, every setting at its default.
php -n -d extension_dir="$stage$ext_dir" -c "$stage$ini_dir/memcast.ini" -r 'exit(extension_loaded("memcast") && ini_get("memcast.prefix") === "memcast.sess." ? 0 : 1);' \
    || fail "the installed memcast.ini does not load the extension"
ok "php loads memcast from the installed path and ini"
# The unit as installed, with ExecStart pointing into the staging root.
unit=$(mktemp -d)/memcastd.service
sed "s|/usr/local/bin/memcastd|$stage/usr/local/bin/memcastd|" "$stage/etc/systemd/system/memcastd.service" > "$unit"
systemd-analyze verify "$unit" || fail "systemd-analyze verify rejects the unit"
rm -rf "$(dirname "$unit")"
ok "systemd-analyze verify accepts the unit"
make -s uninstall DESTDIR="$stage" >/dev/null
left=$(cd "$stage" && find . -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $left"
ok "make uninstall removed everything it installed"

deb=$(make -s deb | tail -1)
[ -f "$deb" ] || fail "make deb made no package ($deb)"
info=$(dpkg-deb --info "$deb")
phpapi=$(php-config --phpapi)
for dep in "phpapi-$phpapi" php8.2-common libzmq5 memcached libc6; do
    echo "$info" | grep -E "^ Depends:.*(^|[ ,])$dep\b" >/dev/null || fail "package does not depend on $dep"
done
contents=$(dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\.||' | grep -v '/$' | sort)
want=$(printf '%s\n' "$ext_dir/libmemcast.so" /etc/php/8.2/mods-available/memcast.ini /usr/bin/memcastd \
    /etc/memcast/memcastd.toml /lib/systemd/system/memcastd.service /usr/lib/sysctl.d/60-memcast.conf \
    /usr/share/doc/memcast/copyright /usr/share/doc/memcast/changelog.gz /usr/share/man/man8/memcastd.8.gz | sort)
[ "$contents" = "$want" ] || fail "package contents differ: $(diff <(echo "$want") <(echo "$contents") || true)"
ok "dpkg-deb --info: depends on phpapi-$phpapi, php8.2-common, libzmq5, memcached, libc6; --contents: the five files, the sysctl file, copyright, changelog, man page"
# Debian's own package checks; the README lists what remains (info tags only).
command -v lintian >/dev/null || fail "lintian is not installed (make deps)"
lintian --fail-on error,warning "$deb" || fail "lintian reports errors or warnings"
ok "lintian: no error or warning"
if dpkg -s memcast >/dev/null 2>&1; then fail "memcast is already installed on this machine; refusing to touch it"; fi
installed_pkg=yes
dpkg -i "$deb" >/dev/null || fail "dpkg -i failed"
php -m | grep -x memcast >/dev/null || fail "after dpkg -i, php -m does not list memcast"
/usr/bin/memcastd --version | grep memcastd >/dev/null || fail "memcastd --version"
getent passwd memcast >/dev/null || fail "the package made no memcast user"
systemd-analyze verify /lib/systemd/system/memcastd.service || fail "systemd-analyze verify rejects the installed unit"
ok "dpkg -i: php -m lists memcast; memcastd runs; the unit verifies"
# A session through the installed package against a local memcached (one
# server, no memcastd: warm_check off, as the README says).
port=$(php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); $n = stream_socket_get_name($s, false); echo substr($n, strrpos($n, ":") + 1);')
memcached -u root -l 127.0.0.1 -p "$port" -U 0 & mc_pid=$!
for _ in $(seq 100); do php -r "exit(@fsockopen('127.0.0.1', $port) ? 0 : 1);" && break; sleep 0.05; done
opts=(-d session.save_handler=memcast -d "session.save_path=127.0.0.1:$port" -d memcast.warm_check=0)
sid=$(php "${opts[@]}" -r 'session_start(); $_SESSION["n"] = 42; echo session_id();')
got=$(php "${opts[@]}" -r "session_id('$sid'); session_start(); echo ini_get('session.save_handler'), ' ', \$_SESSION['n'] ?? 'missing';")
kill "$mc_pid"; wait "$mc_pid" 2>/dev/null || true
[ "$got" = "memcast 42" ] || fail "a session through the installed package read back as: $got"
ok "session.save_handler=memcast: a session written by one php process is read by the next ($got)"
dpkg --purge memcast >/dev/null || fail "dpkg --purge failed"
installed_pkg=""
php -m | grep -x memcast >/dev/null && fail "after purge, php still loads memcast"
[ ! -e /usr/bin/memcastd ] || fail "purge left /usr/bin/memcastd"
ok "dpkg --purge removed it"
