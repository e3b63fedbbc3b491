#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine of this project's kind:
# Debian packages (real peers: OpenSSH server, nginx, hypercorn (h2c/WebSocket), wrk, hyperfine, Chromium +
# ChromeDriver, sqlite3, curl (the VM-side hero_proc call))
# and the npm peers in tools/peers (OpenRPC meta-schema, Prism, oidc-provider, playwright-core).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for bin in /usr/sbin/sshd:openssh-server /usr/sbin/nginx:nginx /usr/bin/hypercorn:python3-hypercorn /usr/bin/wrk:wrk /usr/bin/hyperfine:hyperfine \
           /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver /usr/bin/sqlite3:sqlite3 /usr/bin/jq:jq /usr/bin/curl:curl; do
  [ -x "${bin%%:*}" ] || need_apt+=("${bin##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# sshd refuses to start without its privilege separation directory.
[ -d /run/sshd ] || { [ "$(id -u)" = 0 ] && mkdir -p /run/sshd; } || true

if [ ! -d tools/peers/node_modules ] || [ tools/peers/package-lock.json -nt tools/peers/node_modules ]; then
  echo "install-test-deps: npm ci in tools/peers"
  (cd tools/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch tools/peers/node_modules
fi

# The Prometheus project's Python client parses /metrics in the deployer's tests.
if ! tools/peers/py/bin/python -c 'import prometheus_client' 2>/dev/null; then
  echo "install-test-deps: prometheus_client into tools/peers/py"
  python3 -m venv tools/peers/py
  tools/peers/py/bin/pip install -q --disable-pip-version-check prometheus_client==0.26.0
fi
