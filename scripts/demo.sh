#!/usr/bin/env bash
# The quickstart's main job: builds the workspace (release) and runs `hero_os_tfgrid_deployer demo`,
# which starts the dev Forge, the deployer server (local backend: a sandbox with a real sshd and a
# real HTTP gateway) and the admin dashboard, provisions a user end to end and prints the URL and
# credentials. Arguments go to `demo` (e.g. `scripts/demo.sh alice --keep`; `--help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
# The local backend runs a real OpenSSH server per sandbox.
if [ ! -x /usr/sbin/sshd ]; then
  echo "demo: installing openssh-server (the local backend's sandboxes run a real sshd)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi
[ -d /run/sshd ] || { [ "$(id -u)" = 0 ] && mkdir -p /run/sshd; } || true
cargo build --release --workspace --bins
exec target/release/hero_os_tfgrid_deployer demo "$@"
