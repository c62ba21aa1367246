#!/usr/bin/env bash
# make demo: a three-host memcast cluster on this machine. Hosts A, B and C
# are network namespaces on a bridge, each with its own memcached, memcastd
# and PHP; writes travel over real PGM multicast (epgm). The demo writes a
# session on A, reads it on C, kills A's memcached and shows PHP on A still
# reading and writing through the next server. Everything it creates is
# removed on exit, even on failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
so=$root/target/release/libmemcast.so
memcastd=$root/target/release/memcastd
[ "$(id -u)" = 0 ] || { echo "demo: needs root (it creates network namespaces)" >&2; exit 1; }
[ -f "$so" ] && [ -x "$memcastd" ] || { echo "demo: run 'make build' first" >&2; exit 1; }

tag=mcd$$
net=198.19.$(( $$ % 200 + 20 ))
group=239.192.$(( $$ % 200 + 20 )).1
work=$(mktemp -d /tmp/memcast-demo.XXXXXX)
hosts=(a b c)
declare -A memcached_pid memcastd_pid addr
pids=()

cleanup() {
    set +e
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for h in "${hosts[@]}"; do
        ip netns del "$tag$h" 2>/dev/null
        rm -rf "/etc/netns/$tag$h"
    done
    ip link del "${tag}br" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Three hosts on a bridge: A=$net.1 B=$net.2 C=$net.3, multicast group $group"
ip link add "${tag}br" type bridge mcast_snooping 0
ip link set "${tag}br" up
i=1
for h in "${hosts[@]}"; do
    ns=$tag$h
    addr[$h]=$net.$i
    ip netns add "$ns"
    # OpenPGM resolves "eth0" as a host name first; keep that lookup local.
    mkdir -p "/etc/netns/$ns"
    printf 'hosts: files\nnetworks: files\n' > "/etc/netns/$ns/nsswitch.conf"
    ip link add "${tag}v$h" type veth peer name eth0 netns "$ns"
    ip link set "${tag}v$h" master "${tag}br" up
    ip -n "$ns" addr add "${addr[$h]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
    i=$((i + 1))
done

head -c 32 /dev/urandom | base64 > "$work/cluster.key"
chmod 600 "$work/cluster.key"

for h in "${hosts[@]}"; do
    ip netns exec "$tag$h" memcached -l 0.0.0.0 -p 11211 -U 0 -m 64 -u root &
    memcached_pid[$h]=$!; pids+=($!)
    ip netns exec "$tag$h" "$memcastd" --memcached 127.0.0.1:11211 \
        --subscribe "epgm://eth0;$group:5555" --key-file "$work/cluster.key" \
        --stats-interval 0 2> "$work/memcastd-$h.log" &
    memcastd_pid[$h]=$!; pids+=($!)
done
sleep 1
say "memcached and memcastd running on every host"
for h in "${hosts[@]}"; do sed 's/^/  '"$h"': /' "$work/memcastd-$h.log" | grep started || true; done

# PHP on host $1 with memcast; its save_path lists itself first, then the
# others, every server named as every host names it (the cluster-wide lock
# places each session's lock by those names).
php_on() {
    local h=$1 code=$2 others=()
    for o in "${hosts[@]}"; do [ "$o" = "$h" ] || others+=("${addr[$o]}:11211"); done
    ip netns exec "$tag$h" php -n -d "extension=$so" -d session.save_handler=memcast \
        -d "session.save_path=${addr[$h]}:11211, ${others[0]}, ${others[1]}" \
        -d "memcast.publish=\"epgm://eth0;$group:5555\"" \
        -d "memcast.key_file=$work/cluster.key" -d display_errors=stderr \
        -r "ob_start(); $code"
}

say "Host A: session_start() and write a session (PHP's encoding is full of '|')"
id=$(php_on a '
    session_start();
    $_SESSION["user"] = "alice|admin";
    $_SESSION["cart"] = ["book", "pen|blue"];
    fwrite(STDERR, "  wrote on A: " . session_encode() . "\n");
    echo session_id();')
echo "  session id: $id"

say "Host C: read the same session"
read_code='session_id("'"$id"'"); session_start(); echo "  ", session_encode(), "\n";'
for attempt in $(seq 50); do
    out=$(php_on c "$read_code")
    [[ "$out" == *alice* ]] && break
    sleep 0.1
done
echo "$out"
[[ "$out" == *'alice|admin'* ]] || { echo "demo: C did not receive the session" >&2; exit 1; }

say "Kill host A's memcached (kill -9)"
kill -9 "${memcached_pid[a]}"
wait "${memcached_pid[a]}" 2>/dev/null || true

say "Host A keeps reading and writing, through B, without an error"
out=$(php_on a 'session_id("'"$id"'"); session_start();
    $_SESSION["visits"] = ($_SESSION["visits"] ?? 0) + 1;
    echo "  read on A: ", session_encode(), "\n";
    echo "  session_write_close(): ", var_export(session_write_close(), true), "\n";' 2>&1)
echo "$out"
[[ "$out" == *"session_write_close(): true"* && "$out" != *Warning* ]] || { echo "demo: failover failed" >&2; exit 1; }

say "Host C sees the write A made during the failover"
for attempt in $(seq 50); do
    out=$(php_on c "$read_code")
    [[ "$out" == *visits* ]] && break
    sleep 0.1
done
echo "$out"
[[ "$out" == *'visits|i:1;'* ]] || { echo "demo: C did not receive the failover write" >&2; exit 1; }

say "memcastd counters (SIGTERM, then each logs its totals)"
for h in b c; do
    kill -TERM "${memcastd_pid[$h]}"; wait "${memcastd_pid[$h]}" 2>/dev/null || true
    grep -o 'received=.*' "$work/memcastd-$h.log" | sed 's/^/  '"$h"': /'
done

say "Demo done: cleaning up namespaces, bridge and processes"
