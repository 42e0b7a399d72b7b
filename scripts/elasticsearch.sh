#!/usr/bin/env bash
# A real Elasticsearch for development, tests and CI, from Maven Central only: one node, or a
# cluster of several on loopback ports.
#
#   scripts/elasticsearch.sh start [--name NAME] [--secure]   # prints the URL on its last line
#   scripts/elasticsearch.sh start --nodes 3 [--name NAME]    # prints the node URLs, comma-separated
#   scripts/elasticsearch.sh stop|status [--name NAME]        # every node of NAME
#   scripts/elasticsearch.sh kill --name NAME --node I        # SIGKILL node I of a cluster (tests)
#
# A cluster's nodes live in NAME-1 .. NAME-N (each its own unpacked server, data and logs; heap
# APIWATCH_ES_HEAP, 512m by default for a cluster); NAME.nodes records N.
# The server is the `org.elasticsearch.distribution.integ-test-zip:elasticsearch` zip (server,
# transport modules, x-pack core and security; no ILM, ingest processors, painless or reindex).
# It is cached under .cache/elasticsearch, unpacked per node under .cache/elasticsearch/NAME, and
# run as the unprivileged user `apiwatch-es` because Elasticsearch refuses to run as root.
# `--secure` turns security on: basic auth for the `elastic` user (password in NAME/password) and
# TLS on HTTP with a CA generated here (NAME/certs/ca.crt). The URL printed then starts https://.
set -euo pipefail
cd "$(dirname "$0")/.."

ES_VERSION="${APIWATCH_ES_VERSION:-8.19.21}"
MAVEN="${MAVEN_CENTRAL:-https://repo1.maven.org/maven2}"
CACHE="$PWD/.cache/elasticsearch"
ES_USER=apiwatch-es
HEAP="${APIWATCH_ES_HEAP:-1g}"

cmd="${1:-}"
shift || true
name=default
secure=0
nodes=1
kill_node=
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --secure) secure=1; shift ;;
    --nodes) nodes="$2"; shift 2 ;;
    --node) kill_node="$2"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
case "$nodes" in ''|*[!0-9]*) echo "--nodes takes a number" >&2; exit 2 ;; esac
[ "$nodes" -ge 1 ] || { echo "--nodes takes a number from 1" >&2; exit 2; }
if [ "$nodes" -gt 1 ] && [ "$secure" = 1 ]; then echo "--secure is for a single node" >&2; exit 2; fi
node="$CACHE/$name"
home="$node/elasticsearch-$ES_VERSION"
# A cluster's node count (stop, status and kill find its nodes by it).
cluster_file="$CACHE/$name.nodes"

log() { echo "elasticsearch.sh: $*" >&2; }

pick_java() {
  # 8.19 runs on Java 17; 9.x needs 21+. Prefer an explicit ES_JAVA_HOME, then the newest JDK.
  if [ -n "${ES_JAVA_HOME:-}" ]; then echo "$ES_JAVA_HOME"; return; fi
  local major="${ES_VERSION%%.*}"
  for j in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-amd64; do
    if [ -x "$j/bin/java" ]; then
      if [ "$major" -ge 9 ] && [ "$j" = /usr/lib/jvm/java-17-openjdk-amd64 ]; then continue; fi
      echo "$j"; return
    fi
  done
  local java
  java="$(readlink -f "$(command -v java)")"
  dirname "$(dirname "$java")"
}

fetch_zip() {
  local zip="$CACHE/elasticsearch-$ES_VERSION.zip"
  if [ ! -s "$zip" ]; then
    mkdir -p "$CACHE"
    local url="$MAVEN/org/elasticsearch/distribution/integ-test-zip/elasticsearch/$ES_VERSION/elasticsearch-$ES_VERSION.zip"
    log "downloading $url"
    # Each start downloads to its own file (several start at once in the tests) and renames a
    # zip that checks whole: no start can read another's half-written download.
    local part="$zip.part.$$"
    curl -fsS --retry 3 -o "$part" "$url" || { rm -f "$part"; log "download failed: is Maven Central reachable? (set MAVEN_CENTRAL to a mirror)"; exit 1; }
    unzip -tqq "$part" >/dev/null || { rm -f "$part"; log "the download of $url is not a whole zip: run again"; exit 1; }
    mv -f "$part" "$zip"
  fi
  echo "$zip"
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

ensure_user() {
  if ! id "$ES_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" 2>/dev/null ||
      adduser --system --no-create-home "$ES_USER" >/dev/null
  fi
}

as_es() {
  if [ "$(id -u)" = 0 ]; then
    # runuser keeps the environment we pass explicitly; su would need a login shell.
    runuser -u "$ES_USER" -- env "$@"
  else
    env "$@"
  fi
}

url_of() {
  local scheme=http
  [ -f "$node/secure" ] && scheme=https
  echo "$scheme://127.0.0.1:$(cat "$node/port")"
}

health() {
  local url="$1"
  if [ -f "$node/secure" ]; then
    curl -fsS --cacert "$node/certs/ca.crt" -u "elastic:$(cat "$node/password")" "$url/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null
  else
    curl -fsS "$url/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null
  fi
}

make_certs() {
  # A CA and a server certificate for 127.0.0.1/localhost, with openssl (Debian's, on the machine).
  local d="$node/certs"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=apiwatch test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/http.key" -out "$d/http.csr" 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" >"$d/ext.cnf"
  openssl x509 -req -in "$d/http.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/ext.cnf" -out "$d/http.crt" 2>/dev/null
}

running() { [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

# Unpacks the server for $node (once) and writes its elasticsearch.yml up to security:
# `configure NODE_NAME HTTP_PORT DISCOVERY_LINES`.
configure() {
  local node_name="$1" port="$2" discovery="$3"
  if [ ! -d "$home" ]; then
    mkdir -p "$node"
    log "unpacking $(basename "$zip") into $node"
    (cd "$node" && unzip -q "$zip")
  fi
  echo "$port" >"$node/port"
  rm -f "$node/secure"
  conf="$home/config/elasticsearch.yml"
  cat >"$conf" <<EOF
cluster.name: apiwatch-$name
node.name: $node_name
network.host: 127.0.0.1
http.port: $port
$discovery
path.data: $node/data
path.logs: $node/logs
# Tests fill small disks; never turn indices read-only because of the disk watermark.
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
EOF
}

# Starts the configured node at $node as a daemon (the caller waits for its health).
launch() {
  mkdir -p "$node/data" "$node/logs"
  chown -R "$ES_USER" "$node"
  chmod 755 "$CACHE" "$node"
  log "starting Elasticsearch $ES_VERSION ($java) as $(basename "$node") on port $(cat "$node/port"), heap $HEAP"
  as_es ES_JAVA_HOME="$java" ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
    "$home/bin/elasticsearch" -d -p "$node/pid" >"$node/stdout.log" 2>&1 || {
    log "failed to start; see $node/stdout.log and $node/logs/"
    tail -20 "$node/stdout.log" >&2 || true
    exit 1
  }
}

start_cluster() {
  ensure_user
  zip="$(fetch_zip)"
  java="$(pick_java)"
  [ -n "${APIWATCH_ES_HEAP:-}" ] || HEAP=512m
  local i http=() transport=() names=() seeds masters
  for i in $(seq 1 "$nodes"); do
    http+=("$(free_port)")
    transport+=("$(free_port)")
    names+=("\"$name-$i\"")
  done
  seeds="$(printf '"127.0.0.1:%s",' "${transport[@]}")"
  masters="$(IFS=,; echo "${names[*]}")"
  echo "$nodes" >"$cluster_file"
  for i in $(seq 1 "$nodes"); do
    node="$CACHE/$name-$i"
    home="$node/elasticsearch-$ES_VERSION"
    if running "$node"; then kill -9 "$(cat "$node/pid")"; sleep 1; fi
    # A new cluster at each start: nodes of an older one would not join this one.
    rm -rf "$node/data" "$node/logs"
    configure "$name-$i" "${http[$((i - 1))]}" "transport.port: ${transport[$((i - 1))]}
discovery.seed_hosts: [ ${seeds%,} ]
cluster.initial_master_nodes: [ $masters ]"
    echo "xpack.security.enabled: false" >>"$conf"
    launch
  done
  local urls=() url
  for i in $(seq 1 "$nodes"); do urls+=("http://127.0.0.1:${http[$((i - 1))]}"); done
  url="${urls[0]}"
  for _ in $(seq 1 240); do
    if curl -fsS "$url/_cluster/health?wait_for_nodes=$nodes&wait_for_status=green&timeout=1s" >/dev/null 2>&1; then
      (IFS=,; echo "${urls[*]}")
      return
    fi
    sleep 1
  done
  log "the $nodes nodes did not form a green cluster in 240 s; see $CACHE/$name-*/logs/"
  exit 1
}

start() {
  if [ "$nodes" -gt 1 ]; then
    start_cluster
    return
  fi
  if running "$node"; then
    url_of
    return
  fi
  ensure_user
  zip="$(fetch_zip)"
  java="$(pick_java)"
  configure "$name" "$(free_port)" "transport.port: 0
discovery.type: single-node"
  if [ "$secure" = 1 ]; then
    touch "$node/secure"
    [ -f "$node/certs/http.crt" ] || make_certs
    cp "$node/certs/http.crt" "$node/certs/http.key" "$node/certs/ca.crt" "$home/config/"
    cat >>"$conf" <<EOF
xpack.security.enabled: true
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.certificate: http.crt
xpack.security.http.ssl.key: http.key
xpack.security.http.ssl.certificate_authorities: [ "ca.crt" ]
EOF
    local password
    password="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)"
    echo "$password" >"$node/password"
    rm -f "$home/config/elasticsearch.keystore"
    "$home/bin/elasticsearch-keystore" create >/dev/null 2>&1 || true
    printf '%s' "$password" | ES_JAVA_HOME="$java" "$home/bin/elasticsearch-keystore" add -x -f bootstrap.password >/dev/null
  else
    echo "xpack.security.enabled: false" >>"$conf"
  fi
  launch
  local url
  url="$(url_of)"
  for _ in $(seq 1 180); do
    if health "$url" >/dev/null; then
      echo "$url"
      return
    fi
    sleep 1
  done
  log "not healthy after 180 s; see $node/logs/"
  tail -30 "$node/logs/apiwatch-$name.log" >&2 2>/dev/null || true
  exit 1
}

# The node directories of NAME: its cluster's nodes, or the single node.
node_dirs() {
  if [ -f "$cluster_file" ]; then
    local i
    for i in $(seq 1 "$(cat "$cluster_file")"); do echo "$CACHE/$name-$i"; done
  else
    echo "$node"
  fi
}

stop_node() {
  if [ -f "$node/pid" ]; then
    local pid
    pid="$(cat "$node/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$node/pid"
  fi
  log "stopped $(basename "$node")"
}

stop() {
  local d
  for d in $(node_dirs); do node="$d" stop_node; done
  rm -f "$cluster_file"
}

kill_one() {
  if [ ! -f "$cluster_file" ] || [ -z "$kill_node" ]; then
    echo "kill needs --name of a cluster and --node I" >&2
    exit 2
  fi
  local d="$CACHE/$name-$kill_node"
  running "$d" || { echo "node $kill_node of $name is not running" >&2; exit 1; }
  kill -9 "$(cat "$d/pid")"
  log "killed node $kill_node of $name"
}

status() {
  if [ -f "$cluster_file" ]; then
    local d urls=()
    for d in $(node_dirs); do
      if running "$d"; then urls+=("http://127.0.0.1:$(cat "$d/port")"); fi
    done
    [ ${#urls[@]} -gt 0 ] || { echo "not running" >&2; exit 1; }
    curl -fsS "${urls[0]}/_cluster/health?timeout=1s" && echo
    (IFS=,; echo "${urls[*]}")
    return
  fi
  if running "$node"; then
    local url
    url="$(url_of)"
    health "$url" && echo && echo "$url"
  else
    echo "not running" >&2
    exit 1
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill) kill_one ;;
  *) echo "usage: $0 start|stop|status|kill [--name NAME] [--secure] [--nodes N] [--node I]" >&2; exit 2 ;;
esac
