#!/usr/bin/env bash
# hero_proxy vs Debian nginx, with wrk (shared/reference/test-peers.md §5, §6), all on 127.0.0.1:
#   (a) upstream direct (nginx `return 200`, 1 worker)
#   (b) nginx proxy_pass to it (keepalive 64)
#   (c) hero_proxy, public route
#   (d) hero_proxy, sso route with a valid session (session lookup, claims, token-freshness check, header rewrite,
#       signed assertion). The session comes from examples/bench_session.rs (a stand-in for a real sign-in whose
#       provider is never contacted because the token expiry lies in the future).
# Each configuration runs RUNS times (default 3); the median req/s and median p99 are reported, plus ratios.
# Usage: crates/hero_proxy/benches/proxy_bench.sh [duration=10s] [connections=64] [threads=2]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10s}; CONN=${2:-64}; THREADS=${3:-2}; RUNS=${RUNS:-3}
for b in nginx wrk; do command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "missing $b (scripts/install-test-deps.sh)"; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q -p hero_proxy --bin hero_proxy --example bench_session
BIN=target/release/hero_proxy
SESSION_TOOL=target/release/examples/bench_session

D=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

UP=$(free_port); NG=$(free_port); HP=$(free_port)
nginx_conf() { # $1 dir, $2 workers, $3 server block
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<NGX
worker_processes $2;
pid $1/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/client; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  $3
}
NGX
  "$NGINX" -t -q -e stderr -p "$1" -c "$1/nginx.conf"
}
nginx_conf "$D/up" 1 "server { listen 127.0.0.1:$UP; location / { return 200 'ok'; } }"
nginx_conf "$D/px" auto "upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
"$NGINX" -e stderr -p "$D/up" -c "$D/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$NGINX" -e stderr -p "$D/px" -c "$D/px/nginx.conf" -g 'daemon off;' & PIDS+=($!)

mkdir -p "$D/hp"
COOKIE=$("$SESSION_TOOL" "$D/hp")
cat > "$D/hp/hero_proxy.toml" <<TOML
listen = "127.0.0.1:$HP"
state_dir = "$D/hp"
socket_dir = "$D/hp/sockets"
public_url = "http://127.0.0.1:$HP"
[[routes]]
path = "/public"
upstream = "http://127.0.0.1:$UP"
policy = "public"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:$UP"
policy = "sso"
TOML
HERO_PROXY_LOG=warn "$BIN" --config "$D/hp/hero_proxy.toml" >"$D/hp/log" 2>&1 & PIDS+=($!)
wait_port "$UP"; wait_port "$NG"; wait_port "$HP"
curl -sf -o /dev/null -H "Cookie: $COOKIE" "http://127.0.0.1:$HP/x" || { echo "session route not answering 200"; cat "$D/hp/log"; exit 1; }

# One wrk run → "req/s p99_ms".
one() { # $1 url, $2 extra header
  local out
  if [ -n "${2:-}" ]; then out=$(wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency -H "$2" "$1"); else out=$(wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency "$1"); fi
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx responses from $1" >&2; echo "$out" >&2; exit 1; fi
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "# wrk -t$THREADS -c$CONN -d$DUR, $RUNS interleaved rounds (a b c d per round), median; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
declare -A RPS P99
URLS=("a upstream direct|http://127.0.0.1:$UP/|" "b nginx proxy_pass|http://127.0.0.1:$NG/|" "c hero_proxy public|http://127.0.0.1:$HP/public|" "d hero_proxy session|http://127.0.0.1:$HP/x|Cookie: $COOKIE")
for round in $(seq 1 "$RUNS"); do
  for u in "${URLS[@]}"; do
    IFS='|' read -r label url hdr <<<"$u"
    read -r r p <<<"$(one "$url" "$hdr")"
    RPS[$label]+="$r "; P99[$label]+="$p "
  done
done
row() { local l=$1; echo "$l|$(tr ' ' '\n' <<<"${RPS[$l]}" | grep . | median)|$(tr ' ' '\n' <<<"${P99[$l]}" | grep . | median)|${RPS[$l]% }|${P99[$l]% }"; }
A=$(row "a upstream direct"); B=$(row "b nginx proxy_pass"); C=$(row "c hero_proxy public"); Dd=$(row "d hero_proxy session")
printf '| config | req/s (median) | p99 ms (median) | runs req/s | runs p99 ms |\n|---|---|---|---|---|\n'
for r in "$A" "$B" "$C" "$Dd"; do echo "| ${r//|/ | } |"; done
rb=$(echo "$B" | cut -d'|' -f2); pb=$(echo "$B" | cut -d'|' -f3)
for r in "$C" "$Dd"; do
  echo "$r" | awk -F'|' -v rb="$rb" -v pb="$pb" '{printf "%s: %.2f x nginx req/s, p99 %+.2f ms vs nginx\n", $1, $2/rb, $3-pb}'
done
