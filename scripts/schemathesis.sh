#!/usr/bin/env bash
# Schemathesis (pinned, pip) with every check against two gateways, each
# tested through the OpenAPI document it publishes:
#   1. `tollgate demo` (config.example.yaml and its sample upstream), with
#      the `scanner-trap` abuse policy taken out of a copy of the config:
#      a fuzzer's stream of 401/404/429 answers is exactly what it bans,
#      after which every call is 403 `banned` and nothing else is tested;
#   2. the Tray Platform API spec (tests/fixtures/, a public spec),
#      imported with `tollgate import` over tests/schemathesis/spec_upstream.py,
#      a permissive upstream answering what the spec documents. (The
#      gateway checks path parameters and JSON bodies, not query strings or
#      form bodies, so a spec with those relies on its upstream refusing
#      bad ones: tests/it/openapi.rs covers their round trip instead.)
# Bounded: at most $MAX_EXAMPLES cases per operation and phase, fixed seed.
#
#   TOLLGATE_BIN=target/debug/tollgate scripts/schemathesis.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-20}
SEED=${SEED:-1}
bin=${TOLLGATE_BIN:-$root/target/debug/tollgate}
case $bin in /*) ;; *) bin=$root/$bin ;; esac
[ -x "$bin" ] || (cd "$root" && cargo build --quiet --bin tollgate)

if [ "$(schemathesis --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 20s for a URL to answer.
wait_for() {
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# `st KEY SPEC ARGS...`: every check, the key given for each way the
# export says it may be sent (so Schemathesis can also leave it out, or
# spoil it, one way at a time).
st() {
  local key=$1
  shift
  cat >"$work/schemathesis.toml" <<TOML
[auth.openapi.apiKey]
api_key = "$key"
[auth.openapi.bearerApiKey]
bearer = "$key"
${ST_EXTRA:-}
TOML
  # From $work: Schemathesis keeps its cache (.schemathesis/) in the
  # current directory, and the repository is no place for it.
  (cd "$work" && schemathesis --config-file "$work/schemathesis.toml" run "$@" --checks all \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" --request-timeout 10 --no-color)
}

echo "== demo: the sample upstream behind config.example.yaml (without scanner-trap)"
mkdir -p "$work/demo/examples"
cp -r "$root/policies" "$work/demo/"
cp -r "$root/examples/keys" "$work/demo/examples/"
sed '/^apply:/ { s/scanner-trap, //; s/, scanner-trap//; s/\[scanner-trap\]/[]/ }' \
  "$root/config.example.yaml" >"$work/demo/config.example.yaml"
(cd "$work/demo" && exec "$bin" demo >"$work/demo.log" 2>&1) &
pids+=($!)
wait_for http://127.0.0.1:9901/healthz
# An employee the sample upstream knows, so calls also reach its 200.
ST_EXTRA='[parameters]
"path.employeeId" = "42"' \
  st demo-admin-key http://127.0.0.1:9901/openapi.json --url http://127.0.0.1:8080

# The key the imported gateways' clients hold (sha256 below).
key=schemathesis-key
sha=$(printf %s "$key" | sha256sum | cut -d' ' -f1)

for spec in tray-platform-api.yaml; do
  echo "== imported: tests/fixtures/$spec"
  name=${spec%.yaml}
  python3 "$root/tests/schemathesis/spec_upstream.py" "$root/tests/fixtures/$spec" "$work/$name.port" &
  pids+=($!)
  for _ in $(seq 1 200); do [ -s "$work/$name.port" ] && break; sleep 0.1; done
  upstream=http://127.0.0.1:$(cat "$work/$name.port")
  port=$(free_port)
  {
    printf 'version: 1\nlisten: 127.0.0.1:%s\n' "$port"
    printf 'clients:\n  - id: schemathesis\n    api_keys: [{ sha256: %s }]\n' "$sha"
    "$bin" import "$root/tests/fixtures/$spec" --upstream "$upstream" --base-path "/$name"
  } >"$work/$name.yaml"
  "$bin" check -c "$work/$name.yaml"
  "$bin" openapi -c "$work/$name.yaml" >"$work/$name.openapi.json"
  "$bin" serve -c "$work/$name.yaml" >"$work/$name.log" 2>&1 &
  pids+=($!)
  # Any answer will do (a 404 is one): the listener is up.
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  st "$key" "$work/$name.openapi.json" --url "http://127.0.0.1:$port"
done
echo "schemathesis: no failures"
