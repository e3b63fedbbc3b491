#!/usr/bin/env bash
# Local demo of the admin dashboard: dev Forge + deployer server (local backend, real sshd) +
# the dashboard in DEV auth mode on http://127.0.0.1:${PORT:-8090}. Everything lives in one temp
# dir (or $DEMO_DIR) and is stopped with Ctrl-C.
#
#   crates/hero_os_tfgrid_deployer_admin/scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo build -q -p hero_devforge -p hero_os_tfgrid_deployer_server -p hero_os_tfgrid_deployer \
  -p hero_os_tfgrid_deployer_admin
T="$PWD/target/debug"
DIR="${DEMO_DIR:-$(mktemp -d)}"
PORT="${PORT:-8090}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

"$T/hero_devforge" seed-admin --username forgeadmin --data-dir "$DIR/forge" --token-out "$DIR/forge.token" >/dev/null
coproc FORGE { exec "$T/hero_devforge" serve --listen 127.0.0.1:0 --data-dir "$DIR/forge" 2>"$DIR/forge.log"; }
pids+=("$FORGE_PID")
read -r line <&"${FORGE[0]}"
FORGE_URL="${line#listening on }"

export HERO_SOCKET_DIR="$DIR/sock"
HERO_DEPLOYER_DATA_DIR="$DIR/data" HERO_DEPLOYER_FORGE_URL="$FORGE_URL" \
  HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN=127.0.0.1:0 \
  "$T/hero_os_tfgrid_deployer_server" 2>"$DIR/server.log" &
pids+=("$!")
for _ in $(seq 1 150); do   # up to ~30 s
  "$T/hero_os_tfgrid_deployer" server status >/dev/null 2>&1 && break
  sleep 0.2
done
"$T/hero_os_tfgrid_deployer" server status >/dev/null
"$T/hero_os_tfgrid_deployer" secret set deployer/forge_admin_token --from-file "$DIR/forge.token" >/dev/null
echo "dev-admin" | "$T/hero_os_tfgrid_deployer" secret set deployer/ADMIN_FORGE_USERS >/dev/null

echo "dashboard: http://127.0.0.1:$PORT  (dev mode, signed in as dev-admin; state in $DIR)"
"$T/hero_os_tfgrid_deployer_admin" --auth-mode dev --listen "127.0.0.1:$PORT" \
  --secrets-dir "$DIR/data/secrets" 2>"$DIR/admin.log" &
pids+=("$!")
wait "${pids[-1]}"
