#!/usr/bin/env bash
# What the shared state store costs: one Tollgate per store — memory, a
# single Redis, a 3-master Redis Cluster — doing the same job, measured in
# alternation (memory redis cluster memory redis cluster ...) so that drift
# on a shared machine hits all three alike. Prints rps and p99 per store
# (median over rounds) and each Redis store as a ratio of the memory
# store (issue #20's goal: rps ≥ 0.8× memory), and the CPU time per
# request of the Tollgate and of its redis-server(s) (from /proc, so
# what other processes on the machine use is not in it).
#
# The job: allow only 127.0.0.0/8, require an API key, and a per-key rate
# limit high enough never to trigger — one store decision per call (on
# Redis, concurrent ones batched into one EVALSHA) — in front of an nginx
# upstream answering a small JSON.
# The cluster has no replicas here (they would only take CPU from the
# masters on a small machine; the failover tests have them).
#
# Usage: benches/store-load.sh [ROUNDS] [SECONDS]   (defaults: 3 rounds of 5 s)
# Env:   CONNECTIONS (64), THREADS (1),
#        PROFILE (perf, as benches/load.sh; `release` builds faster),
#        TOLLGATE_BIN (a tollgate already built, e.g. of another commit,
#        to compare builds; then nothing is built)
# Needs: wrk, nginx, redis-server and redis-cli (apt-get install wrk
#        nginx-light redis-server redis-tools; installed when missing and
#        run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-5}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
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
need redis-server redis-server
need redis-cli redis-tools
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need nginx nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

PROFILE=${PROFILE:-perf}
if [ -n "${TOLLGATE_BIN:-}" ]; then
  TOLLGATE=$TOLLGATE_BIN
else
  echo "building tollgate (profile $PROFILE)..." >&2
  cargo build --profile "$PROFILE" --quiet
  TOLLGATE=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/tollgate
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  "$NGINX" -p "$WORK/up" -c nginx.conf -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pong() { [ "$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'PING\r\n' >&3 && head -c 5 <&3) 2>/dev/null)" = "+PONG" ]; }

# redis PORT [ARGS...]: a private redis-server, waited for.
redis() {
  local port=$1; shift
  mkdir -p "$WORK/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK/redis-$port" --loglevel warning "$@" >"$WORK/redis-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do pong "$port" && return; sleep 0.1; done
  echo "redis-server on $port did not come up" >&2; exit 1
}

# --- the upstream: nginx, one worker, a fixed answer --------------------------
UP=$(free_port)
mkdir -p "$WORK/up/logs"
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
    location / { default_type application/json; return 200 '{"ok":true,"from":"wf"}\n'; }
  }
}
NGINX
"$NGINX" -p "$WORK/up" -c nginx.conf

# --- the stores ----------------------------------------------------------------
SINGLE=$(free_port)
redis "$SINGLE"
declare -A RPIDS=([memory]="" [redis]=$!)
NODES=()
for _ in 1 2 3; do
  port=$(free_port); bus=$(free_port)
  redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port "$bus"
  RPIDS[cluster]="${RPIDS[cluster]:-} $!"
  NODES+=("127.0.0.1:$port")
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/cluster.log"
for _ in $(seq 1 100); do
  redis-cli -p "${NODES[0]##*:}" cluster info | grep -q 'cluster_state:ok' && break
  sleep 0.1
done
SEEDS=$(printf 'redis://%s, ' "${NODES[@]}"); SEEDS="[${SEEDS%, }]"

declare -A STATE=(
  [memory]="{ store: memory }"
  [redis]="{ store: redis, redis_url: \"redis://127.0.0.1:$SINGLE\" }"
  [cluster]="{ store: redis, redis: { cluster: $SEEDS } }"
)
STORES="memory redis cluster"

# --- one Tollgate per store, the same job --------------------------------------
declare -A PORT=() PID=()
for store in $STORES; do
  PORT[$store]=$(free_port)
  cat > "$WORK/$store.yaml" <<YAML
version: 1
listen: 127.0.0.1:${PORT[$store]}
state: ${STATE[$store]}
roles: [bench]
clients:
  - { id: one, roles: [bench], api_keys: [{ sha256: $(printf %s "$KEY" | sha256sum | cut -d' ' -f1) }] }
policies:
  lan: { type: ip, allow: [127.0.0.0/8] }
  key: { type: auth, methods: [api_key] }
  per-key: { type: rate_limit, limit: 1000000, window: 1s, key: client }
apply: [lan, key, per-key]
apis:
  - name: bench
    upstream: http://127.0.0.1:$UP
    operations:
      - { id: small, method: GET, path: /small }
YAML
  RUST_LOG=warn "$TOLLGATE" serve -c "$WORK/$store.yaml" 2>"$WORK/$store.log" &
  PIDS+=($!)
  PID[$store]=$!
done

wait_up() { for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.1; done; echo "port $1 did not come up" >&2; return 1; }
for store in $STORES; do
  wait_up "${PORT[$store]}" || { cat "$WORK/$store.log" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "http://127.0.0.1:${PORT[$store]}/small")
  [ "$code" = 200 ] || { echo "sanity check failed for $store: $code" >&2; cat "$WORK/$store.log" >&2; exit 1; }
done

to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v } else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 } else print v }'; }
median() { sort -g | awk '{a[NR]=$1} END { if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

# ticks PID... -> their CPU time (user + system), in clock ticks
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }
HZ=$(getconf CLK_TCK)

# run STORE -> "rps p99_ms gateway_us_per_request redis_us_per_request"
run() {
  local out rps p99 non2xx g0 r0 g1 r1 n
  # shellcheck disable=SC2086 # RPIDS holds a list of pids
  g0=$(ticks "${PID[$1]}"); r0=$(ticks ${RPIDS[$1]})
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECS}s" --latency -H "X-API-Key: $KEY" "http://127.0.0.1:${PORT[$1]}/small")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  [ -z "$non2xx" ] || echo "warning: $1 had $non2xx non-2xx answers" >&2
  # shellcheck disable=SC2086
  g1=$(ticks "${PID[$1]}"); r1=$(ticks ${RPIDS[$1]})
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(to_ms "$p99") $(awk -v a="$g0" -v b="$g1" -v c="$r0" -v d="$r1" -v n="$n" -v hz="$HZ" \
    'BEGIN { printf "%.1f %.1f", (b - a) * 1e6 / hz / n, (d - c) * 1e6 / hz / n }')"
}

echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); profile $PROFILE; wrk -t$THREADS -c$CONNECTIONS -d${SECS}s, $ROUNDS rounds (alternating)"
declare -A R=()
for round in $(seq 1 "$ROUNDS"); do
  for store in $STORES; do R[$store.$round]=$(run "$store"); done
done
declare -A M=()
printf '| %-8s | %10s | %8s | %10s | %10s | %10s | %10s |\n' store rps p99_ms rps_ratio p99_ratio gw_us/req redis_us/req
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ---------- ------------ ---------- ------------ ------------ ------------ ------------
for store in $STORES; do
  for col in 1 2 3 4; do
    M[$store.$col]=$(for round in $(seq 1 "$ROUNDS"); do echo "${R[$store.$round]}" | awk -v c=$col '{print $c}'; done | median)
  done
  awk -v s="$store" -v r="${M[$store.1]}" -v p="${M[$store.2]}" -v mr="${M[memory.1]}" -v mp="${M[memory.2]}" \
    -v g="${M[$store.3]}" -v x="${M[$store.4]}" \
    'BEGIN { printf "| %-8s | %10s | %8s | %9.2fx | %9.2fx | %10s | %10s |\n", s, r, p, r/mr, p/mp, g, x }'
done
for store in $STORES; do
  echo "$store tollgate RSS after the run: $(awk '/VmRSS/ {print $2, $3}' "/proc/${PID[$store]}/status")"
done
