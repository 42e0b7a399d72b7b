#!/usr/bin/env bash
# The project's test command (the README names it; .ci/run calls it).
# Formatting and lints first (cheap, and they fail fast), then unit and integration tests built
# optimized (the `ci` profile: release without its fat LTO, which would link every test binary
# through the whole dependency graph again): the integration tests push hours of simulated
# traffic through the binary.
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

# The integration tests talk to real servers: two Elasticsearch nodes (one plain, one with
# security and TLS on) and a three-node cluster (a node is killed under a running worker), an SMTP server with a read API (maildev), rsyslog and a headless browser. Start them in the
# background now so that they boot while the code compiles; stop them when the tests end.
services_log=$(mktemp -d)
stop_services() {
  local code=$?
  scripts/elasticsearch.sh stop --name test >/dev/null 2>&1 || true
  scripts/elasticsearch.sh stop --name test-secure >/dev/null 2>&1 || true
  scripts/elasticsearch.sh stop --name test-cluster >/dev/null 2>&1 || true
  scripts/maildev.sh stop >/dev/null 2>&1 || true
  if [ "$code" = 0 ]; then
    rm -rf "$services_log"
  else
    # A failed run keeps what the servers and installers said.
    echo "the services' and installers' logs are kept in $services_log" >&2
  fi
}
trap stop_services EXIT
echo "starting in the background (logs in $services_log):"
echo "  two Elasticsearch nodes (the integ-test zip from Maven Central, run as a dedicated user; one with security and TLS on)"
echo "  a three-node Elasticsearch cluster (the same zip, 512 MB heap per node)"
echo "  maildev (SMTP with a read API, from npm), ONNX Runtime and the trainer's Python environment (PyPI)"
echo "  Chromium and rsyslog with omelasticsearch (Debian packages, installed if missing), check-jsonschema (PyPI)"
echo "meanwhile: cargo fmt --check, clippy -D warnings, and the optimized build (profile ci)"
scripts/elasticsearch.sh start --name test >"$services_log/es" 2>"$services_log/es.err" &
es_pid=$!
scripts/elasticsearch.sh start --name test-secure --secure >"$services_log/es-secure" 2>"$services_log/es-secure.err" &
es_secure_pid=$!
scripts/elasticsearch.sh start --nodes 3 --name test-cluster >"$services_log/es-cluster" 2>"$services_log/es-cluster.err" &
es_cluster_pid=$!
scripts/maildev.sh start >"$services_log/mail" 2>"$services_log/mail.err" &
mail_pid=$!
# The ONNX Runtime library and the trainer's Python environment, from PyPI (cached in .cache/).
( scripts/onnxruntime.sh && scripts/train/setup.sh ) >"$services_log/ml" 2>"$services_log/ml.err" &
ml_pid=$!
# Debian's packages: Chromium (the HTML report is loaded in it, headless) and rsyslog with
# omelasticsearch (a real shipper tails a log into Elasticsearch).
debian_packages() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v rsyslogd >/dev/null 2>&1 || missing+=(rsyslog)
  ls /usr/lib/*/rsyslog/omelasticsearch.so >/dev/null 2>&1 || missing+=(rsyslog-elasticsearch)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "install Debian's ${missing[*]} (needs root)" >&2
    return 1
  fi
  echo "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" ||
    { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
}
debian_packages >"$services_log/debian" 2>"$services_log/debian.err" &
debian_pid=$!
# check-jsonschema (with the compose-spec schema vendored) for the offline compose checks.
compose_env() {
  local venv=.cache/compose-venv
  [ -x "$venv/bin/check-jsonschema" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet -r scripts/compose/requirements.txt; }
  echo "$PWD/$venv/bin/python"
}
compose_env >"$services_log/compose" 2>"$services_log/compose.err" &
compose_pid=$!

cargo fmt --all -- --check
cargo clippy --profile ci --all-targets --locked -- -D warnings

cargo build --profile ci --locked --all-targets

wait_service() { # pid name log
  if ! wait "$1"; then
    echo "could not start $2:" >&2
    cat "$3.err" >&2
    exit 1
  fi
}
echo "waiting for the services to be up"
wait_service "$es_pid" "Elasticsearch" "$services_log/es"
wait_service "$es_secure_pid" "Elasticsearch (security on)" "$services_log/es-secure"
wait_service "$es_cluster_pid" "the three-node Elasticsearch cluster" "$services_log/es-cluster"
wait_service "$mail_pid" "maildev" "$services_log/mail"
wait_service "$ml_pid" "the ONNX Runtime and the trainer environment" "$services_log/ml"
wait_service "$debian_pid" "Chromium and rsyslog (Debian packages)" "$services_log/debian"
wait_service "$compose_pid" "check-jsonschema (PyPI)" "$services_log/compose"
APIWATCH_TEST_ES_URL="$(tail -1 "$services_log/es")"
APIWATCH_TEST_ES_SECURE_URL="$(tail -1 "$services_log/es-secure")"
APIWATCH_TEST_ES_SECURE_CA="$PWD/.cache/elasticsearch/test-secure/certs/ca.crt"
APIWATCH_TEST_ES_SECURE_PASSWORD="$(cat .cache/elasticsearch/test-secure/password)"
APIWATCH_TEST_SMTP="$(tail -1 "$services_log/mail")"
APIWATCH_TEST_ES_CLUSTER="$(tail -1 "$services_log/es-cluster")"
APIWATCH_TEST_ES_CLUSTER_NAME=test-cluster
APIWATCH_TEST_CHROMIUM="$(command -v chromium)"
export APIWATCH_TEST_ES_CLUSTER APIWATCH_TEST_ES_CLUSTER_NAME
export APIWATCH_TEST_CHROMIUM APIWATCH_TEST_ES_URL APIWATCH_TEST_ES_SECURE_URL APIWATCH_TEST_ES_SECURE_CA APIWATCH_TEST_ES_SECURE_PASSWORD APIWATCH_TEST_SMTP
echo "Elasticsearch: $APIWATCH_TEST_ES_URL, $APIWATCH_TEST_ES_SECURE_URL (security on) and the cluster $APIWATCH_TEST_ES_CLUSTER; SMTP: ${APIWATCH_TEST_SMTP%% PASS=*}"

# Run the tests, then close with one plain line summing every test binary's result (the last
# binary cargo runs may hold no test at all, which would make its own closing line misleading).
log="$services_log/test.log"
status=0
# The Python tests (the trainer: gradients against finite differences, exports against numpy,
# a training smoke run; the compose stack's offline checks; the Train-Ticket benchmark's converter
# and scorer on hand-written spans), reported in the same format as
# cargo's so the total below counts them.
python_tests() { # name python dir module
  ( cd "$3" && "$2" -m unittest -v "$4" 2>&1 ) | tee "$log.$1" || status=$?
  local ran failed
  ran=$(sed -n 's/^Ran \([0-9]*\) test.*/\1/p' "$log.$1" | tail -1)
  ran=${ran:-0}
  failed=$(grep -oE '(failures|errors)=[0-9]+' "$log.$1" | awk -F= '{s+=$2} END {print s+0}' || true)
  echo "test result: $1. $((ran - failed)) passed; ${failed} failed" >>"$log"
}
python_tests train "$(tail -1 "$services_log/ml")" scripts/train test_train
python_tests compose "$(tail -1 "$services_log/compose")" scripts/compose test_compose
python_tests bench python3 scripts/bench test_trainticket
cargo test --profile ci --locked 2>&1 | tee -a "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
