#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: Debian nginx `proxy_pass` against hero_proxy's public
# route and its session route, each a single worker under callgrind, the same upstream (nginx `return 200`, not
# counted), wrk `-t1 -c8` for DUR seconds after a 2 s warm-up (counters zeroed after it).
# Why beside proxy_bench.sh: req/s on this shared 2-core machine moves by ±10 % between rounds, and the session
# route's target sits inside that noise; an instruction count is the same to a few per mille from run to run,
# whatever else the machine does, so it says whether a change to the request path made it cheaper. It counts user
# space only (the kernel's share, at parity between the two, is in proxy_bench.sh's CPU columns). One caveat:
# valgrind does not emulate SHA-NI, so the session id's SHA-256 is counted in software (~3,500 instructions, a
# fraction of that on a CPU that has it). TOP=n also lists hero_proxy's n costliest functions (self cost) per route.
# Usage: crates/hero_proxy/benches/proxy_instructions.sh [seconds=8]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-8}; TOP=${TOP:-0}
for b in valgrind callgrind_control wrk python3; do command -v "$b" >/dev/null || { echo "missing $b"; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release -q -p hero_proxy --bin hero_proxy --example bench_session
BIN=target/release/hero_proxy; SESSION_TOOL=target/release/examples/bench_session

D=$(mktemp -d); chmod 755 "$D"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Under callgrind a process starts ~50 times slower: up to 60 s.
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
UP=$(free_port); NG=$(free_port); HP=$(free_port)
nginx_conf() { # $1 dir, $2 server block
  mkdir -p "$1"; cat > "$1/nginx.conf" <<NGX
worker_processes 1;
pid $1/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $1/client; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi; keepalive_requests 1000000;
  $2 }
NGX
}
# No string compression in the dumps: each dump must name its functions itself (a dump after a zero otherwise
# refers to names defined in an earlier one).
CG=(valgrind -q --tool=callgrind --compress-strings=no --compress-pos=no)
nginx_conf "$D/up" "server { listen 127.0.0.1:$UP; location / { return 200 'ok'; } }"
nginx_conf "$D/px" "upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
"$NGINX" -e stderr -p "$D/up" -c "$D/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
# One process (no master), so the worker's instructions are the process's.
"${CG[@]}" --callgrind-out-file="$D/nginx.cg" "$NGINX" -e stderr -p "$D/px" -c "$D/px/nginx.conf" \
  -g 'daemon off; master_process off;' & PIDS+=($!); NGPID=$!
mkdir -p "$D/hp"; COOKIE=$("$SESSION_TOOL" "$D/hp")
cat > "$D/hp/hero_proxy.toml" <<TOML
listen = "127.0.0.1:$HP"
state_dir = "$D/hp"
socket_dir = "$D/hp/sockets"
public_url = "http://127.0.0.1:$HP"
workers = 1
[[routes]]
path = "/public"
upstream = "http://127.0.0.1:$UP"
policy = "public"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:$UP"
policy = "sso"
TOML
HERO_PROXY_LOG=warn "${CG[@]}" --callgrind-out-file="$D/hp.cg" "$BIN" --config "$D/hp/hero_proxy.toml" >"$D/hp/log" 2>&1 & PIDS+=($!); HPPID=$!
wait_port "$UP"; wait_port "$NG"; wait_port "$HP"
curl -sf -o /dev/null -H "Cookie: $COOKIE" "http://127.0.0.1:$HP/x" || { echo "session route not answering 200"; cat "$D/hp/log"; exit 1; }

# Self cost per function of one dump, per request: "total" first, then the TOP costliest.
summarize() { python3 - "$1" "$2" "$3" <<'PY'
import collections, sys
cost = collections.Counter(); fn = None; after_calls = False
for line in open(sys.argv[1]):
    if line.startswith('fn='):
        fn = line[3:].strip(); after_calls = False
    elif line.startswith('calls='):
        after_calls = True  # the next cost line is the call's inclusive cost, not this function's own
    elif line[:1].isdigit() or line[:1] in '+-*':
        parts = line.split()
        if len(parts) >= 2 and not after_calls:
            cost[fn] += int(parts[1])
        after_calls = False
n = int(sys.argv[2])
print(f"total {sum(cost.values()) / n:.0f}")
for f, c in cost.most_common(int(sys.argv[3])):
    print(f"  {c / n:7.0f}  {f[:140]}")
PY
}
# $1 pid, $2 dump name, $3 label, $4 url, $5 extra header → "label: N requests, I instructions/request"
measure() {
  local pid=$1 dump=$2 label=$3 url=$4 hdr=$5 out n f before
  local h=(); [ -n "$hdr" ] && h=(-H "$hdr")
  wrk -t1 -c8 -d2s "${h[@]}" "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  out=$(wrk -t1 -c8 -d"${DUR}s" "${h[@]}" "$url")
  before=$(ls "$D/$dump.cg".* 2>/dev/null | wc -l)
  callgrind_control -d "$pid" >/dev/null
  # The dump is written by the traced process itself: wait (bounded) for the file to appear.
  for _ in $(seq 1 600); do [ "$(ls "$D/$dump.cg".* 2>/dev/null | wc -l)" -gt "$before" ] && break; sleep 0.1; done
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx responses from $url" >&2; echo "$out" >&2; exit 1; fi
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  f=$(ls -t "$D/$dump.cg".* | head -1)
  summarize "$f" "$n" "$TOP" > "$D/$label.sum"
  echo "$label $n $(awk '/^total/ {print $2}' "$D/$label.sum")"
}
echo "# callgrind, wrk -t1 -c8 -d${DUR}s after a 2 s warm-up, one worker each; $(date -u +%FT%TZ) at $(git rev-parse --short HEAD)"
read -r _ nn ni <<<"$(measure "$NGPID" nginx nginx "http://127.0.0.1:$NG/" "")"
read -r _ pn pi <<<"$(measure "$HPPID" hp public "http://127.0.0.1:$HP/public" "")"
read -r _ sn si <<<"$(measure "$HPPID" hp session "http://127.0.0.1:$HP/x" "Cookie: $COOKIE")"
printf '| config | requests | instructions/request | × nginx |\n|---|---|---|---|\n'
echo "| (b) nginx proxy_pass | $nn | $ni | 1.00 |"
echo "| (c) hero_proxy, public route | $pn | $pi | $(awk -v a="$pi" -v b="$ni" 'BEGIN {printf "%.2f", a/b}') |"
echo "| (d) hero_proxy, valid session | $sn | $si | $(awk -v a="$si" -v b="$ni" 'BEGIN {printf "%.2f", a/b}') |"
if [ "$TOP" -gt 0 ]; then for l in public session; do echo; echo "# hero_proxy, $l route: costliest functions (self, per request)"; tail -n +2 "$D/$l.sum"; done; fi
