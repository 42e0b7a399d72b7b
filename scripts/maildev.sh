#!/usr/bin/env bash
# A real SMTP server with a read API, for the email tests: maildev from the npm registry.
#
#   scripts/maildev.sh start   # prints SMTP_PORT=... WEB_PORT=... CA=... USER=... PASS=... on its last line
#   scripts/maildev.sh stop
#
# The server speaks TLS (implicit, as on port 465) with a certificate for 127.0.0.1 signed by a CA made here, and
# requires SMTP authentication, so the tests exercise TLS and credentials the way a real relay
# would. Its REST API (GET /api/email) lets tests read what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.cache/maildev"
VERSION="${APIWATCH_MAILDEV_VERSION:-3.0.0}"
log() { echo "maildev.sh: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  mkdir -p "$DIR"
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    cat "$DIR/env"
    return
  fi
  if [ ! -x "$DIR/node_modules/.bin/maildev" ]; then
    command -v npm >/dev/null || { log "npm is required (Node.js)"; exit 1; }
    log "installing maildev@$VERSION from the npm registry"
    (cd "$DIR" && npm install --silent --no-audit --no-fund "maildev@$VERSION" >/dev/null 2>&1) ||
      { log "npm install maildev@$VERSION failed"; exit 1; }
  fi
  local c="$DIR/certs"
  if [ ! -f "$c/smtp.crt" ]; then
    mkdir -p "$c"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=apiwatch test mail CA" -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$c/smtp.key" -out "$c/smtp.csr" 2>/dev/null
    printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" >"$c/ext.cnf"
    openssl x509 -req -in "$c/smtp.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 30 -extfile "$c/ext.cnf" -out "$c/smtp.crt" 2>/dev/null
  fi
  local smtp web user pass
  smtp="$(free_port)"
  web="$(free_port)"
  user=apiwatch
  pass="$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 16)"
  nohup "$DIR/node_modules/.bin/maildev" --ip 127.0.0.1 --web-ip 127.0.0.1 --smtp "$smtp" --web "$web" \
    --incoming-user "$user" --incoming-pass "$pass" --incoming-secure --incoming-cert "$c/smtp.crt" --incoming-key "$c/smtp.key" \
    >"$DIR/maildev.log" 2>&1 &
  echo $! >"$DIR/pid"
  for _ in $(seq 1 60); do
    if curl -fsS "http://127.0.0.1:$web/api/email" >/dev/null 2>&1; then
      echo "SMTP_PORT=$smtp WEB_PORT=$web CA=$c/ca.crt USER=$user PASS=$pass" | tee "$DIR/env"
      return
    fi
    sleep 0.5
  done
  log "maildev did not start; see $DIR/maildev.log"
  tail -20 "$DIR/maildev.log" >&2
  exit 1
}

stop() {
  if [ -f "$DIR/pid" ]; then
    kill "$(cat "$DIR/pid")" 2>/dev/null || true
    rm -f "$DIR/pid" "$DIR/env"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
