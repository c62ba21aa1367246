#!/usr/bin/env bash
# `make test` ends here: every process a test started must be gone. Lists the
# servers and tools the tests start (memcached, memcastd, php-fpm, nginx,
# php, redis, tcpdump, wrk) that began after `make test` did (the stamp
# target/test-start) and are still running, and fails if there is any.
set -euo pipefail
stamp=${1:-target/test-start}
[ -f "$stamp" ] || { echo "leftovers: no $stamp (run through make test)"; exit 1; }
started=$(stat -c %Y "$stamp")
running() {
    local since=$(( $(date +%s) - started ))
    ps -eo pid=,etimes=,comm=,args= | awk -v since="$since" -v me="$$" '
        $1 != me && $2 <= since && $3 ~ /^(memcached|memcastd|php-fpm|nginx|php|php8\.[0-9]|redis-server|tcpdump|wrk)$/ { print }'
}
# A process stopped a moment ago may still be exiting: up to 5 s.
for _ in $(seq 50); do
    left=$(running)
    [ -z "$left" ] && break
    sleep 0.1
done
if [ -n "$left" ]; then
    echo "leftovers: processes started by make test are still running:"
    echo "$left"
    exit 1
fi
echo "leftovers: none (every process make test started is gone)"
