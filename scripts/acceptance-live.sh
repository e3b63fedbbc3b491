#!/usr/bin/env bash
# Live acceptance run against a REAL Forge and the REAL ThreeFold Grid (test or qa by default).
#
# Creates a throw-away user deployer_test_<random>, provisions its VM with the opentofu backend on
# the given network, checks its public URL and that the URL is gated (no content without signing
# in), then decommissions it, deletes the user from the deployer and from Forge, and removes its
# working state. Ctrl-C (or any failure) runs the same cleanup; a run that could not clean up
# leaves a record under the state dir that the next run finds and removes first.
#
# Credentials come from FILES or STDIN, never from the command line:
#   --forge-url URL                 (or HERO_ACCEPT_FORGE_URL)
#   --admin-token-file PATH|-       (or HERO_ACCEPT_ADMIN_TOKEN_FILE) a Forge site-admin token
#   --mnemonic-file PATH|-          (or HERO_ACCEPT_MNEMONIC_FILE)    the TFGrid mnemonic
#   ("-" = stdin, for at most one of them)
# Options: --network test|qa|dev|main (default test), --state-dir DIR
#   (default ${XDG_STATE_HOME:-~/.local/state}/hero_deployer_acceptance), --tofu PATH (default tofu),
#   --purge-test-users (also delete deployer_test_* Forge users that no record here names),
#   --deploy-timeout SECS (default 3600), --nodes ID,ID,… (candidate gateway nodes of that network;
#   the deployer's default candidates 1,8,13,50 are mainnet's freefarm gateways).
# Without the three credentials it prints "skipped: …" and exits 0 (that is what CI sees).
set -euo pipefail
umask 077

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

forge_url="${HERO_ACCEPT_FORGE_URL:-}"
token_file="${HERO_ACCEPT_ADMIN_TOKEN_FILE:-}"
mnemonic_file="${HERO_ACCEPT_MNEMONIC_FILE:-}"
network="test"
state_dir="${XDG_STATE_HOME:-$HOME/.local/state}/hero_deployer_acceptance"
tofu_bin="tofu"
purge_test_users=0
deploy_timeout=3600
nodes=""

while [ $# -gt 0 ]; do
  case "$1" in
    --forge-url) forge_url="${2:?}"; shift 2 ;;
    --admin-token-file) token_file="${2:?}"; shift 2 ;;
    --mnemonic-file) mnemonic_file="${2:?}"; shift 2 ;;
    --network) network="${2:?}"; shift 2 ;;
    --state-dir) state_dir="${2:?}"; shift 2 ;;
    --tofu) tofu_bin="${2:?}"; shift 2 ;;
    --purge-test-users) purge_test_users=1; shift ;;
    --deploy-timeout) deploy_timeout="${2:?}"; shift 2 ;;
    --nodes) nodes="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --admin-token|--token|--mnemonic|--password)
      echo "refused: $1 would put a secret on the command line; use ${1}-file PATH or ${1}-file - (stdin)" >&2
      exit 2 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

missing=()
[ -n "$forge_url" ] || missing+=("--forge-url")
[ -n "$token_file" ] || missing+=("--admin-token-file")
[ -n "$mnemonic_file" ] || missing+=("--mnemonic-file")
if [ ${#missing[@]} -gt 0 ]; then
  echo "skipped: live acceptance run needs ${missing[*]} (a real Forge, an admin token file and a grid mnemonic file)"
  exit 0
fi
case "$network" in test|qa|dev|main) ;; *) echo "--network must be test, qa, dev or main" >&2; exit 2 ;; esac
if [ -n "$nodes" ] && ! [[ "$nodes" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "--nodes must be node ids separated by commas" >&2; exit 2
fi
if [ "$token_file" = "-" ] && [ "$mnemonic_file" = "-" ]; then
  echo "only one of --admin-token-file and --mnemonic-file can be stdin" >&2; exit 2
fi
for f in "$token_file" "$mnemonic_file"; do
  if [ "$f" != "-" ] && [ ! -r "$f" ]; then echo "cannot read $f" >&2; exit 2; fi
done
for tool in curl python3 "$tofu_bin"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool in PATH" >&2; exit 2; }
done
forge_url="${forge_url%/}"

root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$state_dir"; chmod 700 "$state_dir"
exec 9>"$state_dir/lock"
command -v flock >/dev/null 2>&1 && { flock -n 9 || { echo "another acceptance run holds $state_dir/lock" >&2; exit 1; }; }

# Secrets read once into this shell (stdin allowed), then only ever written to 0600 files in a
# private directory and handed to programs through stdin or curl's header file.
read_secret() { if [ "$1" = "-" ]; then cat; else cat -- "$1"; fi; }
secrets_dir="$(mktemp -d "${TMPDIR:-/tmp}/hda-secrets.XXXXXX")"
trap 'rm -rf "$secrets_dir"' EXIT
token_copy="$secrets_dir/admin_token"; mnemonic_copy="$secrets_dir/mnemonic"
read_secret "$token_file" | tr -d '\r\n' > "$token_copy"
read_secret "$mnemonic_file" > "$mnemonic_copy"
printf 'Authorization: token %s\n' "$(cat "$token_copy")" > "$secrets_dir/auth_header"
[ -s "$token_copy" ] && [ -s "$mnemonic_copy" ] || { echo "empty admin token or mnemonic" >&2; rm -rf "$secrets_dir"; exit 2; }

echo "building the deployer (cargo build)…"
(cd "$root" && cargo build -q -p hero_os_tfgrid_deployer -p hero_os_tfgrid_deployer_server)
bin="$root/target/debug"
cli="$bin/hero_os_tfgrid_deployer"

forge_api() { # METHOD PATH [curl args…]: prints the HTTP status, body to $secrets_dir/body
  local method="$1" path="$2"; shift 2
  curl -sS --max-time 30 -o "$secrets_dir/body" -w '%{http_code}' -X "$method" \
    -H @"$secrets_dir/auth_header" "$forge_url/api/v1$path" "$@" || echo 000
}

server_pid=""
start_server() { # RUN_DIR: a private server on that run's data dir and socket dir
  local run="$1"
  # shellcheck disable=SC1091
  . "$run/run.env"
  mkdir -p "$SOCKETS"; chmod 700 "$SOCKETS"
  HERO_SOCKET_DIR="$SOCKETS" "$bin/hero_os_tfgrid_deployer_server" --config "$run/deployer.toml" \
    >>"$run/server.log" 2>&1 &
  server_pid=$!
  export HERO_SOCKET_DIR="$SOCKETS"
  local deadline=$((SECONDS + 60))
  until "$cli" server status >/dev/null 2>&1; do
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited; log: $run/server.log" >&2; tail -20 "$run/server.log" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { echo "server did not answer within 60 s" >&2; return 1; }
    sleep 0.5
  done
}
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$server_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}

# Removes everything one run made: VM and gateway (tofu destroy through the deployer), the
# deployer's user record, the Forge account, the run's state. Keeps the record if any part fails.
cleanup_run() {
  local run="$1" ok=1
  # shellcheck disable=SC1091
  . "$run/run.env"
  echo "cleaning up $USERNAME ($run)…"
  local tf="$run/data/opentofu"
  if start_server "$run"; then
    # A provision still running (the CLI was interrupted, the job was not) is cancelled first:
    # a cancelled provision deletes what it made, and one user has one active job at a time.
    local jobs
    jobs="$("$cli" --json job list --user "$USERNAME" --active 2>/dev/null | python3 -c '
import json, sys
def ids(v):
    if isinstance(v, dict):
        if "job_id" in v: yield v["job_id"]
        else:
            for x in v.values(): yield from ids(x)
    elif isinstance(v, list):
        for x in v: yield from ids(x)
try: print(" ".join(str(i) for i in ids(json.load(sys.stdin))))
except Exception: pass' || true)"
    for j in $jobs; do
      echo "cancelling active job $j of $USERNAME"
      timeout 3600 "$cli" job cancel "$j" --follow || echo "job cancel $j failed" >&2
    done
    if [ -n "$(ls -A "$tf" 2>/dev/null)" ]; then
      timeout 3600 "$cli" vm delete "$USERNAME" --follow || echo "vm delete failed" >&2
    fi
    # Only local records; they go with the run dir even if this is refused.
    "$cli" user delete "$USERNAME" --yes >/dev/null 2>&1 || true
  fi
  stop_server
  # The grid side is gone when the backend removed every working dir (it does so only after a
  # successful `tofu destroy`); otherwise the tofu state is kept for the next attempt.
  if [ -n "$(ls -A "$tf" 2>/dev/null)" ]; then
    ok=0; echo "grid resources may remain: tofu state kept in $tf" >&2
  fi
  local st
  st="$(forge_api DELETE "/admin/users/$USERNAME?purge=true")"
  case "$st" in 204|404) ;; *) ok=0; echo "Forge refused deleting $USERNAME: HTTP $st" >&2 ;; esac
  if [ $ok = 1 ]; then
    rm -rf "$run" "$SOCKETS"
    echo "cleaned up $USERNAME"
  else
    echo "LEFTOVER kept at $run: the next run retries its cleanup" >&2
  fi
  [ $ok = 1 ]
}

# 1. Leftovers of earlier runs.
for old in "$state_dir"/run-*; do
  [ -f "$old/run.env" ] || continue
  echo "found leftovers of an earlier run: $old"
  cleanup_run "$old" || true
done
st="$(forge_api GET "/users/search?q=deployer_test_&limit=50")"
if [ "$st" = 200 ]; then
  for login in $(python3 -c 'import json,sys; print(" ".join(u["login"] for u in json.load(open(sys.argv[1])).get("data",[]) if u["login"].startswith("deployer_test_")))' "$secrets_dir/body"); do
    if [ $purge_test_users = 1 ]; then
      st2="$(forge_api DELETE "/admin/users/$login?purge=true")"
      echo "deleted Forge test user $login (HTTP $st2)"
    else
      echo "note: Forge has test user $login that no record here names (another run's? --purge-test-users deletes it)"
    fi
  done
fi

# 2. This run.
username="deployer_test_$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
run="$state_dir/run-$username"
sockets="$(mktemp -d "${TMPDIR:-/tmp}/hda-sock.XXXXXX")"
mkdir -p "$run/data"
cat > "$run/run.env" <<EOF
USERNAME=$username
NETWORK=$network
SOCKETS=$sockets
EOF
cat > "$run/deployer.toml" <<EOF
data_dir = "$run/data"

[forge]
url = "$forge_url"

[provision]
backend = "opentofu"

[provision.grid]
network = "$network"
$( [ -n "$nodes" ] && echo "candidate_nodes = [$nodes]" )

[provision.opentofu]
binary = "$(command -v "$tofu_bin")"
EOF

finished=0
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [ $finished = 1 ] || echo "interrupted or failed (exit $rc): cleaning up" >&2
  stop_server
  cleanup_run "$run" || rc=1
  rm -rf "$secrets_dir"
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server "$run"
"$cli" secret set deployer/forge_admin_token < "$token_copy"
"$cli" secret set deployer/tfgrid_mnemonic < "$mnemonic_copy"
echo "== user create $username"
"$cli" user create "$username" --display-name "Deployer acceptance run"
echo "== vm deploy $username on $network"
timeout "$deploy_timeout" "$cli" vm deploy "$username" --backend opentofu --follow
url="$("$cli" --json vm show "$username" | python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        u = v.get("url")
        if isinstance(u, str) and u.startswith("https://"):
            return u
        for x in v.values():
            r = find(x)
            if r: return r
    if isinstance(v, list):
        for x in v:
            r = find(x)
            if r: return r
print(find(json.load(sys.stdin)) or "")')"
[ -n "$url" ] || { echo "FAIL: vm show has no https URL" >&2; exit 1; }
echo "== checking $url and its gate"
gate_ok=0
deadline=$((SECONDS + 600))
while [ $SECONDS -lt $deadline ]; do
  out="$(curl -sS --max-time 20 -o /dev/null -w '%{http_code} %{redirect_url}' "$url" 2>/dev/null || true)"
  code="${out%% *}"; location="${out#* }"
  case "$code" in
    200) echo "FAIL: $url served content to an anonymous request (no SSO gate)" >&2; exit 1 ;;
    401|403) gate_ok=1; echo "gate: $code for an anonymous request"; break ;;
    302|303|307)
      case "$location" in
        "$forge_url"/login/oauth/authorize*|*/login*|*/oauth*|*/sso*) gate_ok=1; echo "gate: $code → $location"; break ;;
        *) echo "FAIL: $url redirects to $location, not to a sign-in" >&2; exit 1 ;;
      esac ;;
    *) sleep 10 ;;  # DNS, certificate or bootstrap not ready yet
  esac
done
[ $gate_ok = 1 ] || { echo "FAIL: $url did not answer within 10 min (last: $out)" >&2; exit 1; }
echo "== decommission"
finished=1
echo "PASS: $username provisioned on $network at $url, gated; cleaning up"
