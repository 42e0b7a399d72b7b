#!/usr/bin/env bash
# The project's test command (the README names it; .ci/run calls it).
# Formatting and lints first (cheap, and they fail fast), then unit and integration tests in
# release mode: the integration tests push hours of simulated traffic through the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs, or your distribution's rustc/cargo packages)" >&2
  exit 1
fi
# rustfmt and clippy come with rustup's default profile; add them if this toolchain lacks them.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings

# Run the tests, then close with one plain line summing every test binary's result (the last
# binary cargo runs may hold no test at all, which would make its own closing line misleading).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --locked 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
