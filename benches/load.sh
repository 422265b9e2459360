#!/usr/bin/env bash
# Side-by-side load benchmark: the upstream called directly, nginx and
# haproxy as reverse proxies doing the same job as Tollgate, and Tollgate —
# in alternation (A B C D A B C D ...) so that drift on a shared machine
# hits all alike. Prints rps, p50 and p99 per target (median over rounds),
# the CPU each proxy spent per request, and the ratios against the best
# peer. Everything runs twice: access logs off on every proxy, then on on
# every proxy (nginx to a file with buffer=64k, haproxy to stdout
# redirected to a file, Tollgate's JSON access log to a file).
#
# The job every proxy does: allow only 127.0.0.0/8, require an API key
# (one of two), a per-key rate limit high enough never to trigger, strip
# the key, add X-Forwarded-For, keep-alive to the upstream.
#
# Usage: benches/load.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
# Env:   CONNECTIONS (64), THREADS (1), SCENARIOS ("small big post"),
#        LOGS ("off on": the access-log settings to run),
#        STORE (memory | redis: Tollgate's state store; redis starts a
#        private redis-server on a free port for the run),
#        PROFILE (perf: the cargo profile Tollgate is built with; `release`
#        builds faster, for quick comparisons while working),
#        TOLLGATE_BIN (an already built binary instead, to compare builds)
# Needs: wrk, nginx and haproxy (installed with apt-get when missing and run as root),
#        and redis-server with STORE=redis.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-5}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SCENARIOS=${SCENARIOS:-"small big post"}
STORE=${STORE:-memory}
LOGS=${LOGS:-"off on"}
KEY=bench-key-one

need() {
  command -v "$1" >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null
  else
    echo "need $1 (apt-get install $2)" >&2; exit 1
  fi
}
need wrk wrk
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need nginx nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need haproxy haproxy
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
case $STORE in
  memory) ;;
  redis) need redis-server redis-server ;;
  *) echo "STORE must be memory or redis, not $STORE" >&2; exit 1 ;;
esac

PROFILE=${PROFILE:-perf}
if [ -n "${TOLLGATE_BIN:-}" ]; then
  TOLLGATE=$TOLLGATE_BIN
else
  echo "building tollgate (profile $PROFILE)..." >&2
  cargo build --profile "$PROFILE" --quiet
  TOLLGATE=target/$PROFILE/tollgate
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  "$NGINX" -p "$WORK/up" -c nginx.conf -s stop 2>/dev/null || true
  "$NGINX" -p "$WORK/px" -c nginx.conf -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); NX=$(free_port); TG=$(free_port); HA=$(free_port)
CORES=$(nproc)

# --- the upstream: nginx, one worker, fixed answers -------------------------
mkdir -p "$WORK/up/logs" "$WORK/px/logs" "$WORK/up/html"
head -c 65536 /dev/zero | tr '\0' 'x' > "$WORK/up/html/big"
# nginx workers run as an unprivileged user: mktemp's 0700 would make /big a 403.
chmod 755 "$WORK" "$WORK/up" "$WORK/up/html"
chmod 644 "$WORK/up/html/big"
cat > "$WORK/up/nginx.conf" <<NGINX
worker_processes 1;
error_log logs/error.log crit;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP reuseport;
    location /big { root $WORK/up/html; default_type application/octet-stream; }
    location / { default_type application/json; return 200 '{"ok":true,"from":"wf"}\n'; }
  }
}
NGINX

# --- nginx as the governing proxy --------------------------------------------
nginx_conf() {
  local log=$1
cat > "$WORK/px/nginx.conf" <<NGINX
worker_processes $CORES;
error_log logs/error.log crit;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
  $log
  keepalive_requests 1000000;
  map \$http_x_api_key \$client { default ""; "bench-key-one" one; "bench-key-two" two; }
  limit_req_zone \$client zone=perkey:10m rate=1000000r/s;
  upstream wf { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NX reuseport;
    client_max_body_size 1m;
    # Stream request bodies as Tollgate does, instead of spooling them to disk.
    client_body_buffer_size 64k;
    proxy_request_buffering off;
    location / {
      allow 127.0.0.0/8; deny all;
      if (\$client = "") { return 401; }
      limit_req zone=perkey burst=1000000 nodelay;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-API-Key "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_pass http://wf;
    }
  }
}
NGINX
}

# --- haproxy as the governing proxy: src ACL, key map, stick-table rate --
haproxy_conf() {
  local log=$1
cat > "$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread $CORES
  maxconn 8192
  $( [ "$log" = on ] && echo "log stdout format raw daemon" )
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
  $( [ "$log" = on ] && printf 'log global\n  option httplog' || echo "option dontlog-normal" )
frontend gw
  bind 127.0.0.1:$HA
  acl lan src 127.0.0.0/8
  acl known_key req.hdr(x-api-key) -m str bench-key-one bench-key-two
  http-request deny deny_status 403 unless lan
  http-request deny deny_status 401 unless known_key
  stick-table type string len 32 size 100k expire 10s store http_req_rate(1s)
  http-request track-sc0 req.hdr(x-api-key)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000 }
  http-request del-header x-api-key
  option forwardfor
  default_backend wf
backend wf
  server up 127.0.0.1:$UP maxconn 1024
HAPROXY
}

# --- the state store: a private redis-server when STORE=redis ---------------
STATE="{ store: memory }"
if [ "$STORE" = redis ]; then
  RD=$(free_port)
  redis-server --port "$RD" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --loglevel warning >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    [ "$( (exec 3<>"/dev/tcp/127.0.0.1/$RD" && printf 'PING\r\n' >&3 && head -c 5 <&3) 2>/dev/null)" = "+PONG" ] && break
    sleep 0.1
  done
  STATE="{ store: redis, redis_url: \"redis://127.0.0.1:$RD\" }"
fi

# --- Tollgate with the same job -------------------------------------------
tollgate_conf() {
  local access_log=$1
cat > "$WORK/tollgate.yaml" <<YAML
version: 1
listen: 127.0.0.1:$TG
access_log: $access_log
state: $STATE
limits: { max_body: 1MiB }
roles: [bench]
clients:
  - { id: one, roles: [bench], api_keys: [{ sha256: $(printf %s bench-key-one | sha256sum | cut -d' ' -f1) }] }
  - { id: two, roles: [bench], api_keys: [{ sha256: $(printf %s bench-key-two | sha256sum | cut -d' ' -f1) }] }
policies:
  lan: { type: ip, allow: [127.0.0.0/8] }
  key: { type: auth, methods: [api_key] }
  benchers: { type: roles, allow: [bench] }
  per-key: { type: rate_limit, limit: 1000000, window: 1s, key: client }
apply: [lan, key, benchers, per-key]
apis:
  - name: bench
    upstream: http://127.0.0.1:$UP
    operations:
      - { id: small, method: GET, path: /small }
      - { id: big, method: GET, path: /big }
      - { id: post, method: POST, path: /post }
YAML
}

"$NGINX" -p "$WORK/up" -c nginx.conf
wait_up() { for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.1; done; echo "port $1 did not come up" >&2; exit 1; }
wait_up "$UP"

# start_proxies off|on: nginx, haproxy and Tollgate with access logs off or on.
start_proxies() {
  local log=$1
  if [ "$log" = on ]; then
    nginx_conf "access_log $WORK/px/logs/access.log combined buffer=64k;"
  else
    nginx_conf "access_log off;"
  fi
  haproxy_conf "$log"
  "$NGINX" -p "$WORK/px" -c nginx.conf
  "$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy-$log.log" 2>&1 &
  HA_PID=$!
  if [ "$log" = on ]; then
    tollgate_conf "{ path: $WORK/tollgate-access.log, format: json }"
  else
    tollgate_conf "{ enabled: false }"
  fi
  "$TOLLGATE" serve -c "$WORK/tollgate.yaml" 2>"$WORK/tollgate.log" &
  TG_PID=$!
  PIDS+=("$HA_PID" "$TG_PID")
  wait_up "$NX"; wait_up "$TG"; wait_up "$HA"
  for port in "$NX" "$HA" "$TG"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "http://127.0.0.1:$port/small")
    [ "$code" = 200 ] || { echo "sanity check failed on $port: $code" >&2; cat "$WORK/tollgate.log" >&2; exit 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/small")
    [ "$code" = 401 ] || { echo "port $port let a keyless call through: $code" >&2; exit 1; }
  done
}

stop_proxies() {
  "$NGINX" -p "$WORK/px" -c nginx.conf -s stop 2>/dev/null || true
  kill "$HA_PID" "$TG_PID" 2>/dev/null || true
  wait "$HA_PID" "$TG_PID" 2>/dev/null || true
  # The listeners must be gone before the next start binds them again.
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$NX/" || curl -s -o /dev/null "http://127.0.0.1:$TG/" || break
    sleep 0.1
  done
}

head -c 16384 /dev/zero | tr '\0' 'p' > "$WORK/post.body"
cat > "$WORK/post.lua" <<LUA
local f = io.open("$WORK/post.body", "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["X-API-Key"] = "$KEY"
LUA

nginx_pids() { pgrep -f "nginx: worker process" -P "$(cat "$WORK/px/logs/nginx.pid")" | tr '\n' ' '; echo "$(cat "$WORK/px/logs/nginx.pid")"; }
cpu_ticks() { local t=0; for p in $1; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }

# run TARGET PORT SCENARIO -> "rps p50_ms p99_ms cpu_us_per_req"
run() {
  local port=$2 scenario=$3 path args=()
  case $scenario in
    small) path=/small; args=(-H "X-API-Key: $KEY") ;;
    big)   path=/big;   args=(-H "X-API-Key: $KEY") ;;
    post)  path=/post;  args=(-s "$WORK/post.lua") ;;
  esac
  [ "$1" = direct ] && [ "$scenario" = post ] && path=/post
  local pids=""
  case $1 in nginx) pids=$(nginx_pids) ;; haproxy) pids=$HA_PID ;; tollgate) pids=$TG_PID ;; esac
  local before; before=$(cpu_ticks "$pids")
  local out; out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECS}s" --latency "${args[@]}" "http://127.0.0.1:$port$path")
  local after; after=$(cpu_ticks "$pids")
  local reqs rps p50 p99
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  [ -z "$non2xx" ] || echo "warning: $1 $scenario had $non2xx non-2xx answers" >&2
  local cpu="-"
  if [ -n "$pids" ] && [ "${reqs:-0}" -gt 0 ]; then
    cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  fi
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $cpu"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v } else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 } else print v }'; }
median() { sort -g | awk '{a[NR]=$1} END { if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

echo "machine: $(nproc) cores, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d${SECS}s, $ROUNDS rounds (alternating targets); tollgate store: $STORE"
TARGETS="direct nginx haproxy tollgate"
for log in $LOGS; do
start_proxies "$log"
for scenario in $SCENARIOS; do
  declare -A R=()
  for round in $(seq 1 "$ROUNDS"); do
    for target in $TARGETS; do
      case $target in direct) port=$UP ;; nginx) port=$NX ;; haproxy) port=$HA ;; tollgate) port=$TG ;; esac
      R[$target.$round]=$(run $target $port "$scenario")
    done
  done
  echo
  echo "scenario: $scenario, access logs $log"
  printf '| %-9s | %10s | %8s | %8s | %12s |\n' target rps p50_ms p99_ms cpu_us_per_req
  printf '|%s|%s|%s|%s|%s|\n' ----------- ------------ ---------- ---------- --------------
  declare -A M=()
  for target in $TARGETS; do
    for col in 1 2 3 4; do
      M[$target.$col]=$(for round in $(seq 1 "$ROUNDS"); do echo "${R[$target.$round]}" | awk -v c=$col '{print $c}'; done | { grep -v -- '^-$' || true; } | median)
    done
    printf '| %-9s | %10s | %8s | %8s | %12s |\n' $target "${M[$target.1]}" "${M[$target.2]}" "${M[$target.3]}" "${M[$target.4]}"
  done
  awk -v t="${M[tollgate.1]}" -v n="${M[nginx.1]}" -v h="${M[haproxy.1]}" -v d="${M[direct.1]}" \
      -v tp="${M[tollgate.3]}" -v np="${M[nginx.3]}" -v hp="${M[haproxy.3]}" \
      -v tc="${M[tollgate.4]}" -v nc="${M[nginx.4]}" \
    'BEGIN { best = n > h ? n : h; bestp = n > h ? np : hp;
             printf "ratios (median rps): tollgate/best-peer %.2f (nginx %.2f, haproxy %.2f), tollgate/direct %.2f; p99 tollgate/best-peer %.2f; cpu/req tollgate/nginx %.2f\n", t/best, t/n, t/h, t/d, tp/bestp, tc/nc }'
  unset R M
done
echo
echo "tollgate RSS after the run (logs $log): $(awk '/VmRSS/ {print $2, $3}' /proc/$TG_PID/status)"
stop_proxies
done
