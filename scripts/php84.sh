#!/usr/bin/env bash
# memcast on PHP 8.4, in the Debian 13 root of scripts/debian13-root.sh
# (made once per machine, then reused). Run from the host, as root:
#   scripts/php84.sh build      extension + memcastd into target/php8.4/release
#   scripts/php84.sh phpt       build, then the whole php/tests suite on PHP 8.4
#   scripts/php84.sh deb        build, then target/deb/php8.4/memcast_*.deb (last line: its path)
#   scripts/php84.sh packaging  deb, lintian, then in a throwaway copy of the
#                               root: dpkg -i, php -m, sessions through
#                               memcast against memcached, purge
# target/php8.4 is the 8.4 build's own target dir: target/release stays the
# build machine's PHP (8.2).
set -euo pipefail
cd "$(dirname "$0")/.."
root() { bash scripts/debian13-root.sh "$@"; }
fail() { echo "php84: FAIL: $*" >&2; exit 1; }
build_dir=target/php8.4/release
so=$PWD/$build_dir/libmemcast.so

build() {
    local start=$SECONDS
    # ext-php-rs reads PHP (the binary) and PHP_CONFIG; memcast's build.rs PHP_CONFIG.
    root run env PHP=/usr/bin/php8.4 PHP_CONFIG=/usr/bin/php-config8.4 CARGO_TARGET_DIR=target/php8.4 \
        nice -n 10 cargo build --release --offline -p memcast -p memcastd >&2
    echo "php84: built for PHP 8.4 in $((SECONDS - start)) s" >&2
}

phpt() {
    build
    local start=$SECONDS status=0
    root run env MEMCAST_SO="$so" REPORT_EXIT_STATUS=1 NO_INTERACTION=1 TEST_PHP_EXECUTABLE=/usr/bin/php8.4 \
        php8.4 /usr/lib/php/20240924/build/run-tests.php -q -n -d extension="$so" --show-diff php/tests \
        || status=$?
    echo "php84: php/tests on PHP 8.4 (Debian 13): $([ $status = 0 ] && echo PASSED || echo FAILED) in $((SECONDS - start)) s"
    return $status
}

deb() {
    build
    root run env PHP_CONFIG=/usr/bin/php-config8.4 BUILD_DIR="$build_dir" \
        bash packaging/build-deb.sh target/deb/php8.4 | tail -1
}

packaging() {
    local deb_path info contents
    deb_path=$(deb)
    [ -f "$deb_path" ] || fail "no package made ($deb_path)"
    info=$(dpkg-deb --info "$deb_path")
    for dep in phpapi-20240924 php8.4-common libzmq5 memcached libc6; do
        echo "$info" | grep -E "^ Depends:.*(^|[ ,])$dep\b" >/dev/null || fail "package does not depend on $dep"
    done
    contents=$(dpkg-deb --contents "$deb_path")
    grep -q ' ./usr/lib/php/20240924/libmemcast.so$' <<<"$contents" \
        || fail "the extension is not in PHP 8.4's extension dir"
    grep -q ' ./etc/php/8.4/mods-available/memcast.ini$' <<<"$contents" \
        || fail "the ini is not in /etc/php/8.4/mods-available"
    echo "php84: ok: $deb_path depends on phpapi-20240924, php8.4-common, libzmq5, memcached, libc6"
    # Debian 13's lintian; overrides ship in the package (see the README).
    root run lintian --fail-on error,warning --info "$deb_path" || fail "lintian"
    echo "php84: ok: lintian (Debian 13) reports no error or warning"
    root scratch bash -euc '
        deb=$1
        dpkg -i "$deb" >/dev/null
        php -m | grep -x memcast >/dev/null || { echo "php -m does not list memcast" >&2; exit 1; }
        php -v | head -1
        /usr/bin/memcastd --version | grep memcastd >/dev/null
        echo "php84: ok: dpkg -i in Debian 13; php -m lists memcast; memcastd runs"
        port=$(php -r "\$s = stream_socket_server(\"tcp://127.0.0.1:0\"); \$n = stream_socket_get_name(\$s, false); echo substr(\$n, strrpos(\$n, \":\") + 1);")
        memcached -u root -l 127.0.0.1 -p "$port" -U 0 & mc=$!
        trap "kill $mc; wait $mc 2>/dev/null || true" EXIT
        for _ in $(seq 100); do php -r "exit(@fsockopen(\"127.0.0.1\", $port) ? 0 : 1);" && break; sleep 0.05; done
        # A single memcached with no memcastd: warm_check off (see the README).
        opts=(-d session.save_handler=memcast -d session.save_path=127.0.0.1:$port -d memcast.warm_check=0)
        id=$(php "${opts[@]}" -r "session_start(); \$_SESSION[\"n\"] = 42; echo session_id();")
        [ -n "$id" ] || { echo "no session id" >&2; exit 1; }
        got=$(php "${opts[@]}" -r "session_id(\"$id\"); session_start(); echo ini_get(\"session.save_handler\"), \" \", \$_SESSION[\"n\"] ?? \"missing\";")
        [ "$got" = "memcast 42" ] || { echo "session read back as: $got" >&2; exit 1; }
        echo "php84: ok: session.save_handler=memcast wrote a session and a second php process read it back ($got)"
        dpkg --purge memcast >/dev/null
        php -m | grep -x memcast >/dev/null && { echo "after purge php still loads memcast" >&2; exit 1; }
        echo "php84: ok: dpkg --purge removed it"
    ' php84-packaging "$PWD/$deb_path"
}

case "${1:-}" in
    build) build ;;
    phpt) phpt ;;
    deb) deb ;;
    packaging) packaging ;;
    *) fail "usage: $0 build | phpt | deb | packaging" ;;
esac
