#!/usr/bin/env bash
# Validates the OpenAPI export of a config with both validators DESIGN §7
# names: openapi-spec-validator (PyPI) and redocly lint (npm, recommended
# ruleset plus redocly.yaml). Installs them when missing.
#
#   scripts/validate-openapi.sh CONFIG
#
# Uses $TOLLGATE_BIN when set (CI passes the release binary it already
# built), else builds target/debug/tollgate. Exit status: non-zero when
# either validator complains.
set -euo pipefail

config=${1:?usage: scripts/validate-openapi.sh CONFIG}
root=$(cd "$(dirname "$0")/.." && pwd)
# Pinned so a new release cannot turn a green run red on its own.
REDOCLY_VERSION=2.77.0
SPEC_VALIDATOR_VERSION=0.9.0
tools=${TOLLGATE_TOOLS_DIR:-$root/target/openapi-tools}

if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  python3 -m pip install --quiet "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
fi
if [ ! -x "$tools/node_modules/.bin/redocly" ]; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --silent --no-audit --no-fund "@redocly/cli@$REDOCLY_VERSION" >/dev/null)
fi

bin=${TOLLGATE_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --quiet --bin tollgate)
  bin=$root/target/debug/tollgate
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" openapi -c "$config" --format json >"$out/openapi.json"

echo "== openapi-spec-validator"
python3 -m openapi_spec_validator "$out/openapi.json"
echo "== redocly lint"
"$tools/node_modules/.bin/redocly" lint --config "$root/redocly.yaml" \
  --max-problems 100 "$out/openapi.json"
