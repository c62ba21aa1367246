#!/usr/bin/env bash
# Makes (once per machine) a Debian 13 (trixie) root with PHP 8.4, memcached
# and what memcast builds with, and runs commands inside it.
#
#   scripts/debian13-root.sh make          make the root unless it is there
#   scripts/debian13-root.sh run CMD...    run CMD in the root (makes it first)
#   scripts/debian13-root.sh scratch CMD... run CMD in a throwaway overlay of
#                                          the root: what it installs (dpkg -i)
#                                          is gone afterwards
#
# The root lives in $DEBIAN13_ROOT (default /var/cache/memcast/trixie-root).
# A stamp file next to it names the package list it was made with: a root
# without the stamp (half-made, interrupted) or with another list is made
# again from scratch. `run` mounts, in a private mount namespace that
# vanishes with the command: /proc, /dev, a fresh /tmp, the worktree at its
# own path, and the host's Rust toolchain (/root/.cargo, /root/.rustup) so
# the build uses the same rustc and the same crate cache (builds run
# --offline: the crates are already in the host's cache). Needs root.
set -euo pipefail
ROOT=${DEBIAN13_ROOT:-/var/cache/memcast/trixie-root}
MIRROR=${DEBIAN13_MIRROR:-http://deb.debian.org/debian}
STAMP="$ROOT.stamp"
packages=(
    php8.4-dev php8.4-cli php8.4-fpm   # php-config, headers, run-tests.php; FPM for the locking tests
    memcached                          # the store the phpt suite runs against
    libzmq3-dev libclang-dev pkg-config build-essential   # building the extension and memcastd
    ca-certificates procps iproute2
    lintian                            # checks the PHP 8.4 package with Debian 13's rules
)
want="trixie ${packages[*]}"
fail() { echo "debian13-root: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap, chroot, mounts)"

make_root() {
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$ROOT/usr/bin/php8.4" ]; then
        return 0
    fi
    command -v mmdebstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq mmdebstrap >/dev/null; }
    echo "debian13-root: making $ROOT (Debian 13 with PHP 8.4; once per machine, a few minutes)" >&2
    rm -f "$STAMP"
    rm -rf --one-file-system "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    local start=$SECONDS
    # Services must not start inside the root while it is made.
    mmdebstrap --variant=apt --quiet \
        --include="$(IFS=,; echo "${packages[*]}")" \
        --customize-hook='printf "#!/bin/sh\nexit 101\n" > "$1/usr/sbin/policy-rc.d"; chmod 0755 "$1/usr/sbin/policy-rc.d"' \
        trixie "$ROOT" "$MIRROR" >&2
    echo "$want" > "$STAMP"
    echo "debian13-root: made $ROOT in $((SECONDS - start)) s" >&2
}

run_in_root() {
    local scratch=$1; shift
    make_root
    local here
    here=$(pwd)
    # A private mount namespace: every mount below is gone when the command ends.
    exec unshare --mount --propagation private -- bash -euc '
        root=$1; here=$2; scratch=$3; shift 3
        if [ "$scratch" = 1 ]; then
            # Changes go to a tmpfs layer over the cached root and vanish with it.
            # (/mnt is hidden only inside this namespace.)
            layer=/mnt
            mount -t tmpfs tmpfs "$layer"
            mkdir "$layer/upper" "$layer/work" "$layer/merged"
            mount -t overlay overlay -o "lowerdir=$root,upperdir=$layer/upper,workdir=$layer/work" "$layer/merged"
            root=$layer/merged
        fi
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/tmp"
        for d in /root/.cargo /root/.rustup "$here"; do
            [ -d "$d" ] || continue
            mkdir -p "$root$d"
            mount --bind "$d" "$root$d"
        done
        cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
        exec chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" \
            PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            CARGO_NET_OFFLINE=true LANG=C.UTF-8 \
            bash -c "cd \"\$0\" && exec \"\$@\"" "$here" "$@"
    ' memcast-debian13 "$ROOT" "$here" "$scratch" "$@"
}

case "${1:-}" in
    make) make_root ;;
    run) shift; [ $# -gt 0 ] || fail "run needs a command"; run_in_root 0 "$@" ;;
    scratch) shift; [ $# -gt 0 ] || fail "scratch needs a command"; run_in_root 1 "$@" ;;
    path) echo "$ROOT" ;;
    *) fail "usage: $0 make | run CMD... | scratch CMD... | path" ;;
esac
