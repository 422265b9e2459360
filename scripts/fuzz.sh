#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each, default 30,
# and fails on the first crash; libFuzzer leaves the input that crashed in
# fuzz/artifacts/<target>/. Seeds come from fuzz/corpus/<target>/; inputs
# found meanwhile go to a scratch directory, so the committed corpus stays
# small (copy an interesting one over by hand).
#
# Works on the stable toolchain (no sanitizer: the gateway has no unsafe
# code, so a fuzzer finds panics, hangs and runaway memory, which need
# none). With nightly, `cargo +nightly fuzz run <target>` adds
# AddressSanitizer.
#
# FUZZ_DEV=1 builds the targets without optimisation: a third of the build
# time and a fraction of the executions per second. CI uses it, to keep
# its whole run short on 2 cores; fuzz locally without it to go deep.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
mode=()
[ "${FUZZ_DEV:-0}" = 1 ] && mode=(--dev)
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 1
fi
cargo fuzz build "${mode[@]}" --sanitizer none
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target"
  echo "--- $target: ${seconds}s"
  log="$scratch/$target.log"
  if ! cargo fuzz run "${mode[@]}" --sanitizer none "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
done
