#!/usr/bin/env bash
# Default bootstrap for the LOCAL sandbox backend of hero_os_tfgrid_deployer.
#
# This is a STAND-IN for the real Hero OS `setup-binaries.sh` (whose source stays configurable in
# the deployer): instead of downloading and installing Hero services it starts one tiny HTTP server
# on the sandbox's "port 9988" that answers `GET /health` with 200, so the pipeline's health check
# through the gateway is real end to end. Idempotent: a previous server is stopped first.
#
# Expects the sandbox env file to be sourced first (the deployer runs it via VmInfo::bootstrap_command):
#   HERO_SANDBOX, HERO_WEB_PORT, HERO_PIDS_DIR, HERO_SANDBOX_NAME
# Every process it starts records its PID in $HERO_PIDS_DIR/*.pid so delete_vm can kill it by PID.
set -euo pipefail
: "${HERO_SANDBOX:?source the sandbox env file first}"
: "${HERO_WEB_PORT:?}"
: "${HERO_PIDS_DIR:?}"
mkdir -p "$HERO_PIDS_DIR" "$HERO_SANDBOX/logs"

pidfile="$HERO_PIDS_DIR/health_server.pid"
# Alive and not a zombie (a daemon reparented to a PID 1 that does not reap stays a zombie).
alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "$st" != "Z" ] && [ "$st" != "X" ]
}
if [ -f "$pidfile" ]; then
  old="$(cat "$pidfile")"
  if [ -n "$old" ] && alive "$old"; then
    echo "stopping previous health server (pid $old)"
    kill "$old" 2>/dev/null || true
    # Wait until it is gone, so it neither holds the port nor answers the readiness probe below.
    for _ in $(seq 1 100); do alive "$old" || break; sleep 0.05; done
    alive "$old" && kill -9 "$old" 2>/dev/null || true
  fi
  rm -f "$pidfile"
fi

cat > "$HERO_SANDBOX/health_server.py" <<'PY'
import http.server
import os
import sys

PORT = int(sys.argv[1])
NAME = os.environ.get("HERO_SANDBOX_NAME", "")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] == "/health":
            body = b"ok\n"
        else:
            body = ("Hero OS demo sandbox %s\n" % NAME).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
PY

# setsid: own session, so the server outlives this SSH session; all stdio redirected so the SSH
# channel can close.
setsid python3 "$HERO_SANDBOX/health_server.py" "$HERO_WEB_PORT" \
  >"$HERO_SANDBOX/logs/health_server.log" 2>&1 </dev/null &
echo $! > "$pidfile"
echo "started health server (pid $(cat "$pidfile")) on 127.0.0.1:$HERO_WEB_PORT"

pid="$(cat "$pidfile")"
for _ in $(seq 1 200); do
  if ! alive "$pid"; then
    echo "health server exited; log:" >&2
    cat "$HERO_SANDBOX/logs/health_server.log" >&2 || true
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$HERO_WEB_PORT") 2>/dev/null; then
    echo "health server is listening"
    exit 0
  fi
  sleep 0.05
done
echo "health server did not start listening; log:" >&2
cat "$HERO_SANDBOX/logs/health_server.log" >&2 || true
exit 1
