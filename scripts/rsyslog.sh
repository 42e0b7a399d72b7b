#!/usr/bin/env bash
# Debian's rsyslog with omelasticsearch, tailing a JSON API-call log into Elasticsearch
# (the config is scripts/rsyslog/apiwatch.conf; this script fills in its placeholders).
#
#   scripts/rsyslog.sh install
#   scripts/rsyslog.sh start --name N --file LOG --es URL [--calls STREAM] [--deadletter INDEX]
#                            [--user U --password P] [--ca PEM]
#   scripts/rsyslog.sh stop --name N        # lets the queues drain first
#   scripts/rsyslog.sh check                # validates the config with rsyslogd -N1
#
# Each named instance has its own work directory under .cache/rsyslog/N (positions, queue,
# es-errors.json, rsyslog.log) and runs in the foreground of its own process (rsyslogd -n).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
log() { echo "rsyslog.sh: $*" >&2; }

install() {
  if command -v rsyslogd >/dev/null 2>&1 && ls /usr/lib/*/rsyslog/omelasticsearch.so >/dev/null 2>&1; then
    return
  fi
  [ "$(id -u)" = 0 ] || { log "install Debian's rsyslog and rsyslog-elasticsearch packages (needs root)"; exit 1; }
  log "installing rsyslog and rsyslog-elasticsearch from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends rsyslog rsyslog-elasticsearch >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends rsyslog rsyslog-elasticsearch >/dev/null; }
}

# render OUT WORK LOG URL CALLS DEADLETTER USER PASSWORD CA
render() {
  local out=$1 work=$2 file=$3 url=$4 calls=$5 dead=$6 user=$7 password=$8 ca=$9
  local re='^(https?)://([^/:]+)(:([0-9]+))?/?$'
  [[ "$url" =~ $re ]] || { log "not an Elasticsearch URL: $url (expected http[s]://host:port)"; exit 1; }
  local https=off host=${BASH_REMATCH[2]} port=${BASH_REMATCH[4]:-9200}
  [ "${BASH_REMATCH[1]}" = https ] && https=on
  local auth=""
  [ -n "$user" ] && auth="uid=\"$user\" pwd=\"$password\""
  [ -n "$ca" ] && auth="$auth tls.cacert=\"$ca\""
  sed -e "s|@WORK_DIR@|$work|g" -e "s|@LOG_FILE@|$file|g" -e "s|@ES_HOST@|$host|g" -e "s|@ES_PORT@|$port|g" \
    -e "s|@ES_HTTPS@|$https|g" -e "s|@ES_AUTH@|$auth|g" -e "s|@CALLS@|$calls|g" -e "s|@DEADLETTER@|$dead|g" \
    "$ROOT/scripts/rsyslog/apiwatch.conf" >"$out"
}

start() {
  local name="" file="" url="" calls="logs-apiwatch.calls-default" dead="apiwatch-deadletter" user="" password="" ca=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) name=$2; shift 2 ;;
      --file) file=$2; shift 2 ;;
      --es) url=$2; shift 2 ;;
      --calls) calls=$2; shift 2 ;;
      --deadletter) dead=$2; shift 2 ;;
      --user) user=$2; shift 2 ;;
      --password) password=$2; shift 2 ;;
      --ca) ca=$2; shift 2 ;;
      *) log "unknown option $1"; exit 2 ;;
    esac
  done
  [ -n "$name" ] && [ -n "$file" ] && [ -n "$url" ] || { log "start needs --name, --file and --es"; exit 2; }
  install
  local dir="$ROOT/.cache/rsyslog/$name"
  stop_instance "$name" >/dev/null 2>&1 || true
  rm -rf "$dir"
  mkdir -p "$dir/work"
  render "$dir/rsyslog.conf" "$dir/work" "$file" "$url" "$calls" "$dead" "$user" "$password" "$ca"
  if ! rsyslogd -N1 -f "$dir/rsyslog.conf" >"$dir/check.log" 2>&1; then
    log "rsyslog refused the config $dir/rsyslog.conf:"
    cat "$dir/check.log" >&2
    exit 1
  fi
  # -n: stay in the foreground (this script backgrounds it); -i: our own pid file, not the system's.
  nohup rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" >"$dir/rsyslog.log" 2>&1 &
  echo $! >"$dir/pid"
  sleep 1
  if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    log "rsyslogd exited at once; its log:"
    cat "$dir/rsyslog.log" >&2
    exit 1
  fi
  echo "$dir"
}

stop_instance() {
  local dir="$ROOT/.cache/rsyslog/$1"
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  # SIGTERM: rsyslog stops its inputs, then drains the action queues before it exits.
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
    sleep 0.25
  done
  log "rsyslogd ($pid) did not stop in 30 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

check() {
  install
  local dir
  dir=$(mktemp -d)
  render "$dir/rsyslog.conf" "$dir" "$dir/app.json" "http://127.0.0.1:9200" logs-apiwatch.calls-default apiwatch-deadletter "" "" ""
  rsyslogd -N1 -f "$dir/rsyslog.conf"
  rm -rf "$dir"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) [ "${2:-}" = --name ] && [ -n "${3:-}" ] || { log "stop needs --name N"; exit 2; }; stop_instance "$3" ;;
  check) check ;;
  *) echo "usage: $0 install | start --name N --file LOG --es URL [...] | stop --name N | check" >&2; exit 2 ;;
esac
