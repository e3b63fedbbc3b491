#!/usr/bin/env bash
# hero_proxy vs Debian nginx, with wrk (shared/reference/test-peers.md §5, §6), all on 127.0.0.1:
#   (a) upstream direct (nginx `return 200`, 1 worker)
#   (b) nginx proxy_pass to it (keepalive 64)
#   (c) hero_proxy, public route
#   (d) hero_proxy, sso route with a valid session (session lookup, claims, token-freshness check, header rewrite,
#       signed assertion). The session comes from examples/bench_session.rs (a stand-in for a real sign-in whose
#       provider is never contacted because the token expiry lies in the future).
# Each configuration runs RUNS times (default 3), in an order rotated each round; the median req/s and median p99
# are reported, plus ratios, and the CPU the proxy under test spent per request (user and kernel µs, from
# /proc/<pid>/task/*/stat around each wrk run): on 2 cores shared with wrk and the upstream, req/s moves by ±10 %
# from round to round, CPU per request far less, and it says where a difference comes from.
# Then (STREAM=0 skips) a 1 GiB download and a 1 GiB chunked upload with curl through nginx and through hero_proxy
# (public route; nginx with proxy_buffering/proxy_request_buffering off, so both stream), interleaved RUNS times:
# median MB/s and hero_proxy's peak RSS growth (VmHWM after − VmRSS before, from /proc).
# Then (WS=0 skips) WebSocket echo round trips (examples/ws_bench.rs: 32-byte messages, one at a time, WS_N per
# run) through nginx and through hero_proxy's session route: median of the runs' p50 and p99.
# Usage: crates/hero_proxy/benches/proxy_bench.sh [duration=10s] [connections=64] [threads=2]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10s}; CONN=${2:-64}; THREADS=${3:-2}; RUNS=${RUNS:-3}
for b in nginx wrk; do command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "missing $b (scripts/install-test-deps.sh)"; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q -p hero_proxy --bin hero_proxy --example bench_session --example ws_bench
BIN=target/release/hero_proxy
SESSION_TOOL=target/release/examples/bench_session
WS_TOOL=target/release/examples/ws_bench
STREAM=${STREAM:-1}; WS=${WS:-1}; WS_N=${WS_N:-5000}

D=$(mktemp -d)
# Started as root, nginx runs its workers as `nobody`: mktemp's 0700 directory hid the 1 GiB file from them.
chmod 755 "$D"
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
mkdir -p "$D/www" && truncate -s 1G "$D/www/big"
"$WS_TOOL" serve > "$D/ws.out" & PIDS+=($!)
for _ in $(seq 1 200); do grep -q READY "$D/ws.out" 2>/dev/null && break; sleep 0.05; done
WSP=$(awk '/READY/ {print $2}' "$D/ws.out")
"$WS_TOOL" sink > "$D/sink.out" & PIDS+=($!)
for _ in $(seq 1 200); do grep -q READY "$D/sink.out" 2>/dev/null && break; sleep 0.05; done
SINK=$(awk '/READY/ {print $2}' "$D/sink.out")
nginx_conf "$D/up" 1 "server { listen 127.0.0.1:$UP; client_max_body_size 0; location / { return 200 'ok'; }
  location /big { root $D/www; } }"
nginx_conf "$D/px" auto "upstream app { server 127.0.0.1:$UP; keepalive 64; } upstream ws { server 127.0.0.1:$WSP; } upstream sink { server 127.0.0.1:$SINK; keepalive 8; }
  server { listen 127.0.0.1:$NG; client_max_body_size 0;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    location /big { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }
    location /sink { proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_request_buffering off; }
    location /ws { proxy_pass http://ws; proxy_http_version 1.1; proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection upgrade; } }"
"$NGINX" -e stderr -p "$D/up" -c "$D/up/nginx.conf" -g 'daemon off;' & PIDS+=($!); UPPID=$!
"$NGINX" -e stderr -p "$D/px" -c "$D/px/nginx.conf" -g 'daemon off;' & PIDS+=($!); NGPID=$!

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
[[routes]]
path = "/big"
upstream = "http://127.0.0.1:$UP"
policy = "public"
[[routes]]
path = "/sink"
upstream = "http://127.0.0.1:$SINK"
policy = "public"
[[routes]]
path = "/ws"
upstream = "http://127.0.0.1:$WSP"
policy = "sso"
TOML
HERO_PROXY_LOG=warn "$BIN" --config "$D/hp/hero_proxy.toml" >"$D/hp/log" 2>&1 & PIDS+=($!); HPPID=$!
wait_port "$UP"; wait_port "$NG"; wait_port "$HP"
curl -sf -o /dev/null -H "Cookie: $COOKIE" "http://127.0.0.1:$HP/x" || { echo "session route not answering 200"; cat "$D/hp/log"; exit 1; }

# Clock ticks (user, kernel) of every thread of the given processes.
ticks() { local u=0 k=0 a b; for p in "$@"; do for t in /proc/"$p"/task/*/stat; do
  read -r a b <<<"$(sed 's/^.*) //' "$t" | cut -d' ' -f12,13)"; u=$((u + a)); k=$((k + b)); done; done; echo "$u $k"; }
HZ=$(getconf CLK_TCK)
# One wrk run → "req/s p99_ms user_us_per_req kernel_us_per_req"; $3… are the pids whose CPU is counted.
one() { # $1 url, $2 extra header, $3… pids
  local url=$1 hdr=$2 out u0 k0 u1 k1 n; shift 2
  read -r u0 k0 <<<"$(ticks "$@")"
  if [ -n "$hdr" ]; then out=$(wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency -H "$hdr" "$url"); else out=$(wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency "$url"); fi
  read -r u1 k1 <<<"$(ticks "$@")"
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx responses from $url" >&2; echo "$out" >&2; exit 1; fi
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}') $(awk -v d=$((u1 - u0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}') $(awk -v d=$((k1 - k0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')"
}
# The workers of an nginx master (their CPU is what serving costs; the master only supervises).
workers_of() { pgrep -P "$1" | tr '\n' ' '; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "# wrk -t$THREADS -c$CONN -d$DUR, $RUNS interleaved rounds (a b c d, order rotated each round), median; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
declare -A RPS P99 USR KRN
# label|url|extra header|pids whose CPU is the configuration's own (the upstream's for (a), the proxy's otherwise)
URLS=("a upstream direct|http://127.0.0.1:$UP/||$(workers_of "$UPPID")" "b nginx proxy_pass|http://127.0.0.1:$NG/||$(workers_of "$NGPID")"
  "c hero_proxy public|http://127.0.0.1:$HP/public||$HPPID" "d hero_proxy session|http://127.0.0.1:$HP/x|Cookie: $COOKIE|$HPPID")
# The order rotates each round (a b c d, b c d a, …): in a fixed order a configuration always ran right after the
# same one, and an A/B on this machine showed that position alone moving a result by ±10 %.
for round in $(seq 1 "$RUNS"); do
  for k in 0 1 2 3; do
    u=${URLS[$(( (round - 1 + k) % 4 ))]}
    IFS='|' read -r label url hdr pids <<<"$u"
    # shellcheck disable=SC2086 # pids is a list
    read -r r p cu ck <<<"$(one "$url" "$hdr" $pids)"
    RPS[$label]+="$r "; P99[$label]+="$p "; USR[$label]+="$cu "; KRN[$label]+="$ck "
  done
done
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
row() { local l=$1; echo "$l|$(med "${RPS[$l]}")|$(med "${P99[$l]}")|$(med "${USR[$l]}")|$(med "${KRN[$l]}")|${RPS[$l]% }|${P99[$l]% }"; }
A=$(row "a upstream direct"); B=$(row "b nginx proxy_pass"); C=$(row "c hero_proxy public"); Dd=$(row "d hero_proxy session")
printf '| config | req/s (median) | p99 ms (median) | CPU user µs/req | CPU kernel µs/req | runs req/s | runs p99 ms |\n|---|---|---|---|---|---|---|\n'
for r in "$A" "$B" "$C" "$Dd"; do echo "| ${r//|/ | } |"; done
rb=$(echo "$B" | cut -d'|' -f2); pb=$(echo "$B" | cut -d'|' -f3)
for r in "$C" "$Dd"; do
  echo "$r" | awk -F'|' -v rb="$rb" -v pb="$pb" '{printf "%s: %.2f x nginx req/s, p99 %+.2f ms vs nginx\n", $1, $2/rb, $3-pb}'
done

if [ "$STREAM" = 1 ]; then
  kb() { awk -v k="$1:" '$1==k {print $2}' "/proc/$HPPID/status"; }
  declare -A MBS
  for round in $(seq 1 "$RUNS"); do
    for who in nginx hero_proxy; do
      port=$NG; [ "$who" = hero_proxy ] && port=$HP
      before=$(kb VmRSS)
      down=$(curl -sf -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/big")
      up=$(head -c 1073741824 /dev/zero | curl -sf -o /dev/null -T - -w '%{speed_upload}' "http://127.0.0.1:$port/sink")
      MBS["$who down"]+="$(awk -v b="$down" 'BEGIN {printf "%.0f", b/1e6}') "
      MBS["$who up"]+="$(awk -v b="$up" 'BEGIN {printf "%.0f", b/1e6}') "
      if [ "$who" = hero_proxy ]; then MBS["rss"]+="$(( ($(kb VmHWM) - before) / 1024 )) "; fi
    done
  done
  echo
  echo "# 1 GiB through each proxy, curl, $RUNS interleaved rounds, median MB/s (runs)"
  printf '| transfer | nginx MB/s | hero_proxy MB/s | ratio |\n|---|---|---|---|\n'
  for dir in down up; do
    n=$(tr ' ' '\n' <<<"${MBS[nginx $dir]}" | grep . | median); h=$(tr ' ' '\n' <<<"${MBS[hero_proxy $dir]}" | grep . | median)
    echo "| $dir | $n (${MBS[nginx $dir]% }) | $h (${MBS[hero_proxy $dir]% }) | $(awk -v a="$h" -v b="$n" 'BEGIN {printf "%.2f", a/b}') |"
  done
  echo "hero_proxy peak RSS growth per round (MiB, VmHWM after - VmRSS before): ${MBS[rss]% }"
fi

if [ "$WS" = 1 ]; then
  declare -A W50 W99
  for round in $(seq 1 "$RUNS"); do
    read -r a b _ <<<"$("$WS_TOOL" client "ws://127.0.0.1:$NG/ws" "$WS_N")"; W50[nginx]+="$a "; W99[nginx]+="$b "
    read -r a b _ <<<"$("$WS_TOOL" client "ws://127.0.0.1:$HP/ws" "$WS_N" "$COOKIE")"; W50[hero]+="$a "; W99[hero]+="$b "
  done
  echo
  echo "# WebSocket echo round trip, $WS_N x 32 B per run, $RUNS interleaved runs, median of runs (µs)"
  printf '| via | p50 µs | p99 µs | runs p50 | runs p99 |\n|---|---|---|---|---|\n'
  for w in nginx hero; do
    echo "| $w | $(tr ' ' '\n' <<<"${W50[$w]}" | grep . | median) | $(tr ' ' '\n' <<<"${W99[$w]}" | grep . | median) | ${W50[$w]% } | ${W99[$w]% } |"
  done
fi
