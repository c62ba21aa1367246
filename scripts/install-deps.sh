#!/usr/bin/env bash
# Installs the Debian 12 packages memcast builds, tests and runs with.
# Skips apt entirely when everything is already there.
set -euo pipefail
packages=(
    php8.2-dev php8.2-cli   # php-config, headers, run-tests.php, the CLI
    php8.2-cgi              # php-src's session tests that need a CGI request (uploads, cookies)
    libclang-dev            # bindgen (the ps_module bindings)
    libzmq3-dev             # ZeroMQ built with OpenPGM (epgm://)
    memcached iproute2      # the store; network namespaces for multi-host tests
    nftables                # packet loss on a test link (this kernel has no netem)
    nginx php8.2-fpm        # the web stack of the locking tests
    php8.2-memcached        # the migration test: sessions php-memcached wrote, read by memcast
    tcpdump                 # the capture test: no session plaintext on the wire
    systemd                 # systemd-analyze verify of the unit (packaging test)
    lintian                 # Debian's checks of the package (packaging test)
    mmdebstrap              # the Debian 13 root for the PHP 8.4 tests (make test-php84)
    pkg-config build-essential ca-certificates procps
)
# Extra packages named on the command line (make bench adds its own).
packages+=("$@")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root (or: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
