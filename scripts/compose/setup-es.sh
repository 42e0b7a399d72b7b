#!/usr/bin/env bash
# One-shot job of the compose stack (runs in the Elasticsearch image): makes a CA and
# certificates for Elasticsearch into the `certs` volume, waits for the cluster, and sets the
# password of the kibana_system user from .env. Safe to run again.
set -euo pipefail
: "${ELASTIC_PASSWORD:?set ELASTIC_PASSWORD in .env}"
: "${KIBANA_PASSWORD:?set KIBANA_PASSWORD in .env}"
cd /usr/share/elasticsearch
certs=config/certs
if [ ! -f "$certs/ca/ca.crt" ]; then
  echo "making a CA"
  bin/elasticsearch-certutil ca --silent --pem -out "$certs/ca.zip"
  unzip -q -o "$certs/ca.zip" -d "$certs"
fi
if [ ! -f "$certs/elasticsearch/elasticsearch.crt" ]; then
  echo "making the node certificate (DNS elasticsearch, localhost; IP 127.0.0.1)"
  cat >"$certs/instances.yml" <<'YML'
instances:
  - name: elasticsearch
    dns: [elasticsearch, localhost]
    ip: [127.0.0.1]
YML
  bin/elasticsearch-certutil cert --silent --pem -out "$certs/certs.zip" --in "$certs/instances.yml" \
    --ca-cert "$certs/ca/ca.crt" --ca-key "$certs/ca/ca.key"
  unzip -q -o "$certs/certs.zip" -d "$certs"
fi
# Readable by the other containers' users (Kibana, Logstash and the worker run as uid 1000).
chown -R root:root "$certs"
find "$certs" -type d -exec chmod 755 {} \;
find "$certs" -type f -exec chmod 644 {} \;
chmod 600 "$certs/ca/ca.key" 2>/dev/null || true

echo "waiting for Elasticsearch"
until curl -s --cacert "$certs/ca/ca.crt" https://elasticsearch:9200 | grep -q "missing authentication credentials"; do sleep 2; done
echo "setting the kibana_system password"
until curl -s -X POST --cacert "$certs/ca/ca.crt" -u "elastic:${ELASTIC_PASSWORD}" -H "Content-Type: application/json" \
  https://elasticsearch:9200/_security/user/kibana_system/_password -d "{\"password\":\"${KIBANA_PASSWORD}\"}" | grep -q "^{}"; do
  sleep 2
done
echo "done"
