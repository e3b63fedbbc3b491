#!/usr/bin/env bash
# Default bootstrap for the LOCAL sandbox backend of hero_os_tfgrid_deployer.
#
# This is a STAND-IN for the real Hero OS `setup-binaries.sh` (whose source stays configurable in
# the deployer). It starts the sandbox's Hero stack the way a VM runs it, with this workspace's
# binaries in place of the real services:
#   * hero_cockpit_standin on a loopback port of its own (the cockpit: who is signed in, their
#     claims, their Forge repositories), verifying the signed identity assertion;
#   * hero_proxy on the sandbox's "port 9988" ($HERO_WEB_PORT, where the gateway forwards) in
#     front of it: `/health` public, everything else for the owner and the admins only (policy
#     `owner`), signed in with Forge.
# Both read the sandbox's secret store ($HERO_SECRETS_DIR), which the deployer filled over SSH
# before this runs (`configure_sso`: the OAuth client, the issuer, the owner, the admins). The
# public URL is the manifest's `[user] url` (`push_manifest`).
# Idempotent: processes of an earlier run are stopped first.
#
# Expects the sandbox env file to be sourced first (the deployer runs it via VmInfo::bootstrap_command):
#   HERO_SANDBOX, HERO_WEB_PORT, HERO_PIDS_DIR, HERO_HOME, HERO_SECRETS_DIR, HERO_BIN_DIR
# Every process it starts records its PID in $HERO_PIDS_DIR/*.pid so delete_vm can kill it by PID.
set -euo pipefail
: "${HERO_SANDBOX:?source the sandbox env file first}"
: "${HERO_WEB_PORT:?}"
: "${HERO_PIDS_DIR:?}"
: "${HERO_HOME:?}"
: "${HERO_SECRETS_DIR:?this sandbox predates the SSO edge: decommission and provision it again}"
: "${HERO_BIN_DIR:?}"
umask 077
mkdir -p "$HERO_PIDS_DIR" "$HERO_SANDBOX/logs" "$HERO_SANDBOX/proxy"

for bin in hero_proxy hero_cockpit_standin; do
  if [ ! -x "$HERO_BIN_DIR/$bin" ]; then
    echo "$HERO_BIN_DIR/$bin not found: build the workspace's binaries (cargo build --bins)" >&2
    exit 1
  fi
done

manifest="$HERO_HOME/hero/cfg/cockpit/services.toml"
if [ ! -f "$manifest" ]; then
  echo "no manifest at $manifest (push_manifest runs first)" >&2
  exit 1
fi
# The first `url = "…"`, which is `[user] url` (the deployer writes the manifest; URLs hold no '"').
public_url="$(sed -n 's/^url = "\([^"]*\)"$/\1/p' "$manifest" | head -n 1)"
public_url="${public_url%/}"
if [ -z "$public_url" ]; then
  echo "the manifest $manifest names no public url" >&2
  exit 1
fi

# Alive and not a zombie (a daemon reparented to a PID 1 that does not reap stays a zombie).
alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "$st" != "Z" ] && [ "$st" != "X" ]
}
stop() {
  local pidfile="$HERO_PIDS_DIR/$1.pid" old
  [ -f "$pidfile" ] || return 0
  old="$(cat "$pidfile")"
  if [ -n "$old" ] && alive "$old"; then
    echo "stopping previous $1 (pid $old)"
    kill "$old" 2>/dev/null || true
    # Wait until it is gone, so it holds no port and answers no probe below.
    for _ in $(seq 1 100); do alive "$old" || break; sleep 0.05; done
    alive "$old" && kill -9 "$old" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
# Waits (bounded) until $2 holds a line matching $3; fails with the log when $1 died.
wait_for_line() {
  local pid="$1" log="$2" pattern="$3"
  for _ in $(seq 1 400); do
    if grep -q "$pattern" "$log" 2>/dev/null; then return 0; fi
    if ! alive "$pid"; then
      echo "process $pid exited; log:" >&2
      cat "$log" >&2 || true
      return 1
    fi
    sleep 0.05
  done
  echo "timed out waiting for '$pattern' in $log" >&2
  cat "$log" >&2 || true
  return 1
}
stop hero_proxy
stop cockpit
stop health_server # the Python stand-in of earlier versions

# The proxy's assertion key (made in the store on first use); the cockpit verifies with its public half.
cat > "$HERO_SANDBOX/proxy/print-key.toml" <<TOML
public_url = "$public_url"
state_dir = "$HERO_SANDBOX/proxy"
secrets_dir = "$HERO_SECRETS_DIR"
socket_dir = "sockets"
TOML
# Relative socket_dir, run from the proxy's dir: a unix socket path has at most 107 bytes and a
# sandbox path with a 40-character username is longer than that.
cd "$HERO_SANDBOX/proxy"
"$HERO_BIN_DIR/hero_proxy" --config "$HERO_SANDBOX/proxy/print-key.toml" --print-key \
  >"$HERO_SANDBOX/proxy/key.jwks"

# setsid: own session, so the services outlive this SSH session; all stdio redirected so the SSH
# channel can close.
cockpit_log="$HERO_SANDBOX/logs/cockpit.log"
# The cockpit takes a port from the OS, which may hand out the web port itself: hero_proxy is stopped
# above, so that port is free right now. The gateway would then reach the cockpit without the SSO edge
# (seen once in the crash tests). Started again on another port when that happens; bounded.
for attempt in 1 2 3 4 5; do
  : >"$cockpit_log"
  setsid "$HERO_BIN_DIR/hero_cockpit_standin" --listen 127.0.0.1:0 \
    --proxy-jwks-file "$HERO_SANDBOX/proxy/key.jwks" --audience cockpit \
    --secrets-dir "$HERO_SECRETS_DIR" \
    --request-log "$HERO_SANDBOX/logs/cockpit_requests.jsonl" \
    >"$cockpit_log" 2>&1 </dev/null &
  echo $! > "$HERO_PIDS_DIR/cockpit.pid"
  wait_for_line "$(cat "$HERO_PIDS_DIR/cockpit.pid")" "$cockpit_log" "listening on http://"
  cockpit_addr="$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$cockpit_log" | head -n 1)"
  [ "${cockpit_addr##*:}" != "$HERO_WEB_PORT" ] && break
  echo "cockpit got the web port $HERO_WEB_PORT (attempt $attempt); starting it again"
  stop cockpit
  [ "$attempt" = 5 ] && { echo "the cockpit kept getting the web port" >&2; exit 1; }
done
echo "cockpit (pid $(cat "$HERO_PIDS_DIR/cockpit.pid")) on $cockpit_addr"

cat > "$HERO_SANDBOX/proxy/hero_proxy.toml" <<TOML
# Written by the sandbox bootstrap: the VM's SSO edge.
listen = "127.0.0.1:$HERO_WEB_PORT"
public_scheme = "${public_url%%://*}"
public_url = "$public_url"
state_dir = "$HERO_SANDBOX/proxy"
secrets_dir = "$HERO_SECRETS_DIR"
socket_dir = "sockets"
workers = 1
# The machine is the tester's (root included): keep no Forge token but the owner's.
keep_tokens = "owner"

[[routes]]
id = "health"
path = "/health"
upstream = "http://$cockpit_addr"
policy = "public"

[[routes]]
id = "cockpit"
path = "/"
upstream = "http://$cockpit_addr"
policy = "owner"
pass_token = true
TOML
proxy_log="$HERO_SANDBOX/logs/hero_proxy.log"
: >"$proxy_log"
setsid "$HERO_BIN_DIR/hero_proxy" --config "$HERO_SANDBOX/proxy/hero_proxy.toml" \
  >"$proxy_log" 2>&1 </dev/null &
echo $! > "$HERO_PIDS_DIR/hero_proxy.pid"
pid="$(cat "$HERO_PIDS_DIR/hero_proxy.pid")"
echo "started hero_proxy (pid $pid) on 127.0.0.1:$HERO_WEB_PORT for $public_url"
for _ in $(seq 1 400); do
  if ! alive "$pid"; then
    echo "hero_proxy exited; log:" >&2
    cat "$proxy_log" >&2 || true
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$HERO_WEB_PORT") 2>/dev/null; then
    echo "hero_proxy is listening"
    exit 0
  fi
  sleep 0.05
done
echo "hero_proxy did not start listening; log:" >&2
cat "$proxy_log" >&2 || true
exit 1
