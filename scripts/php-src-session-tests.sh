#!/usr/bin/env bash
# php-src's own ext/session tests, run on memcast instead of the files handler.
#
#  1. The tests come from Debian's php source package (the orig tarball of the
#     installed PHP's version, or the nearest one of the same series that the
#     archive still serves), fetched with apt-get from a private apt
#     configuration (deb-src lines in a scratch directory; the system's apt
#     setup is not touched) and kept in target/php-src/. Nothing from php-src
#     is committed here.
#  2. A copy of the tests is made in which every test that configures the
#     files handler (session.save_handler=files, session.save_path=...)
#     configures memcast on a real memcached instead; skipif.inc's check of a
#     save_path directory is replaced (a server list is not a directory).
#  3. run-tests.php runs every test except those listed, each with its reason,
#     in tests/php-src-session-excluded.txt, with locking on (the default),
#     against a memcached started on a free loopback port and stopped by PID.
# Fails if any test that runs fails, or if the exclusion list names a test
# that no longer exists. Prints how many ran, passed, were skipped (by the
# test's own SKIPIF) and were excluded.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PHP=${PHP:-php}
SO=${MEMCAST_SO:-$root/target/release/libmemcast.so}
RUN_TESTS=${RUN_TESTS:-$(php-config --extension-dir)/build/run-tests.php}
CACHE=${PHP_SRC_CACHE:-$root/target/php-src}
EXCLUDED=$root/tests/php-src-session-excluded.txt
fail() { echo "php-src-session-tests: FAIL: $*" >&2; exit 1; }
say() { echo "php-src-session-tests: $*"; }

[ -f "$SO" ] || fail "$SO not built (make build)"
[ -f "$RUN_TESTS" ] || fail "no run-tests.php at $RUN_TESTS (php8.2-dev)"
command -v memcached >/dev/null || fail "memcached not installed"

php_version=$("$PHP" -r 'echo PHP_VERSION;')
series=$("$PHP" -r 'echo PHP_MAJOR_VERSION, ".", PHP_MINOR_VERSION;')

# ---- 1. the tests, from Debian's source package --------------------------
fetch_tests() {
    local apt_dir=$CACHE/apt
    mkdir -p "$apt_dir"/{lists/partial,cache,etc/sources.list.d,download}
    # The system's own apt sources, as deb-src (one-line and deb822 files).
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        sed 's/^deb /deb-src /' > "$apt_dir/etc/sources.list.d/src.list" || true
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && { sed 's/^Types:.*/Types: deb-src/' "$f"; echo; }
    done > "$apt_dir/etc/sources.list.d/src.sources"
    [ -s "$apt_dir/etc/sources.list.d/src.list" ] || [ -s "$apt_dir/etc/sources.list.d/src.sources" ] ||
        fail "no apt sources on this system to take deb-src lines from"
    local apt=(apt-get -q -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
    "${apt[@]}" update >"$apt_dir/update.log" 2>&1 || fail "apt-get update (deb-src): $(tail -3 "$apt_dir/update.log")"
    # The installed version first, then the others of the series, newest first.
    local versions
    versions=$(apt-cache -o "Dir::Etc::SourceList=/dev/null" \
        -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d" \
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" \
        showsrc "php$series" 2>/dev/null | sed -n 's/^Version: //p' | sort -rV | uniq)
    [ -n "$versions" ] || fail "Debian has no source package php$series"
    versions=$( (echo "$versions" | grep -E "^(.*:)?$php_version-" || true; echo "$versions") | awk '!seen[$0]++')
    local v
    for v in $versions; do
        rm -rf "$apt_dir/download" && mkdir -p "$apt_dir/download"
        if (cd "$apt_dir/download" && "${apt[@]}" source --download-only "php$series=$v" >"$apt_dir/source.log" 2>&1); then
            local tarball
            tarball=$(ls "$apt_dir"/download/php"$series"_*.orig.tar.* | head -1)
            rm -rf "$CACHE/src" && mkdir -p "$CACHE/src"
            tar -xf "$tarball" -C "$CACHE/src" --strip-components=1 --wildcards '*/ext/session/tests/*' '*/sapi/cgi/tests/include.inc'
            echo "${v%%-*}" > "$CACHE/VERSION"
            rm -rf "$apt_dir"
            return 0
        fi
        say "php$series $v: source not downloadable here ($(grep -m1 -E '^E:' "$apt_dir/source.log" || true)); trying the next"
    done
    fail "no version of Debian's php$series source could be downloaded"
}

if [ ! -f "$CACHE/VERSION" ] || [ ! -d "$CACHE/src/ext/session/tests" ]; then
    say "fetching php-src's ext/session tests (Debian source package php$series)"
    fetch_tests
fi
tests_version=$(cat "$CACHE/VERSION")
say "php-src $tests_version ext/session tests, run on PHP $php_version with memcast"

# ---- 2. memcached, and the tests pointed at it ----------------------------
work=$(mktemp -d)
mc_pid=""
cleanup() {
    if [ -n "$mc_pid" ]; then kill "$mc_pid" 2>/dev/null || true; wait "$mc_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$("$PHP" -r '$s = stream_socket_server("tcp://127.0.0.1:0"); $n = stream_socket_get_name($s, false); echo substr($n, strrpos($n, ":") + 1);')
mc_user=()
[ "$(id -u)" = 0 ] && mc_user=(-u root)
memcached -l 127.0.0.1 -p "$port" -U 0 -m 64 -t 1 "${mc_user[@]}" &
mc_pid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
done
# As memcastd marks a memcached that holds everything (no memcastd runs here).
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'set memcast:warm 0 0 1\r\n1\r\n' >&3
read -r -t 2 reply <&3 || true
exec 3>&-
[ "${reply%$'\r'}" = STORED ] || fail "memcached on 127.0.0.1:$port did not start"
save_path="127.0.0.1:$port"

tests=$work/ext/session/tests
mkdir -p "$tests" "$work/sapi/cgi/tests"
cp "$CACHE/src/sapi/cgi/tests/include.inc" "$work/sapi/cgi/tests/"
cp "$CACHE"/src/ext/session/tests/* "$tests/"
# In the --INI-- section only: the files handler becomes memcast, its
# save_path our memcached.
for t in "$tests"/*.phpt; do
    awk -v path="$save_path" '
        /^--[A-Z_]+--$/ { in_ini = ($0 == "--INI--") }
        in_ini && /^[ \t]*session\.save_handler[ \t]*=[ \t]*"?files"?[ \t]*$/ { print "session.save_handler=memcast"; next }
        in_ini && /^[ \t]*session\.save_path[ \t]*=/ { print "session.save_path=" path; next }
        { print }' "$t" > "$t.new"
    mv "$t.new" "$t"
done
cat > "$tests/skipif.inc" <<'EOF'
<?php
if (!extension_loaded("memcast")) die("skip memcast not loaded");
EOF

# ---- 3. run-tests.php on every applicable test ----------------------------
# tests/php-src-session-excluded.txt: "NAME  reason" is not run; "+NAME
# reason" runs with its expected output naming memcast where it names the
# files handler (string(5) "files", a user open('', ...) of the empty path,
# "files (path: )" in PHP's warnings).
declare -A excluded=() adapted=()
while IFS= read -r line; do
    line=${line%%#*}
    name=$(echo "$line" | awk '{print $1}')
    [ -n "$name" ] || continue
    [ -f "$tests/${name#+}" ] || fail "$EXCLUDED names ${name#+}, which php-src $tests_version does not have"
    case $name in
        +*) adapted[${name#+}]=1 ;;
        *) excluded[$name]=1 ;;
    esac
done < "$EXCLUDED"
for name in "${!adapted[@]}"; do
    awk -v path="$save_path" -v q="'" '
        /^--[A-Z_]+--$/ { in_expect = ($0 ~ /^--EXPECT/) }
        in_expect {
            gsub(/string\(5\) "files"/, "string(7) \"memcast\"")
            gsub("open\\(" q q ", ", "open(" q path q ", ")
            gsub(/files \(path: \)/, "memcast (path: " path ")")
            gsub(/\(files\)\. Please verify that the current setting of session\.save_path is correct \(\)/, "(memcast). Please verify that the current setting of session.save_path is correct (" path ")")
        }
        { print }' "$tests/$name" > "$tests/$name.new"
    mv "$tests/$name.new" "$tests/$name"
done

selected=()
for t in "$tests"/*.phpt; do
    [ -n "${excluded[$(basename "$t")]:-}" ] || selected+=("$t")
done

set +e
cgi=$(command -v "php-cgi$series" || command -v php-cgi || true)
NO_INTERACTION=1 REPORT_EXIT_STATUS=1 TEST_PHP_EXECUTABLE=$(command -v "$PHP") TEST_PHP_CGI_EXECUTABLE=$cgi \
    "$PHP" "$RUN_TESTS" -q -n --no-color --show-diff \
    -d "extension=$SO" -d session.save_handler=memcast -d "session.save_path=$save_path" \
    -d memcast.locking=1 "${selected[@]}" > "$work/run.log" 2>&1
status=$?
set -e
cp "$work/run.log" "$CACHE/last-run.log"

count() { grep -aE "^Tests $1 +:" "$work/run.log" | awk -F: '{print $2}' | awk '{print $1}'; }
passed=$(count passed); failed=$(count failed); skipped=$(count skipped); xfailed=$(grep -aE '^Expected fail +:' "$work/run.log" | awk -F: '{print $2}' | awk '{print $1}')
borked=$(grep -acE '^BORK' "$work/run.log" || true)
passed=${passed:-0} failed=${failed:-0} skipped=${skipped:-0} xfailed=${xfailed:-0}
ran=$((passed + failed + xfailed))
summary="${#selected[@]} selected: $ran ran, $passed passed, $failed failed, $xfailed failed as php-src expects (XFAIL), $skipped skipped by their own SKIPIF; ${#excluded[@]} excluded, ${#adapted[@]} with expected output naming memcast (tests/php-src-session-excluded.txt)"
if [ "$failed" != 0 ] || [ "$borked" != 0 ] || [ "$status" != 0 ] || [ "$ran" = 0 ]; then
    sed -n '/^FAILED TEST SUMMARY/,/^====/p;/^BORKED TEST SUMMARY/,/^====/p' "$work/run.log" >&2
    grep -aB2 -A40 '^========DIFF========' "$work/run.log" | sed "s|$work/||g" | head -300 >&2
    say "$summary"
    fail "php-src's session tests failed on memcast (run-tests.php exit $status; whole log: $CACHE/last-run.log)"
fi
say "$summary"
echo "$passed passed, 0 failed, $skipped skipped"
