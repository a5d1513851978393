# Sourced by run_tests.sh and bench/prom_bench.sh: starts Debian's prometheus and
# prometheus-pushgateway on loopback, on free ports, with temporary config and storage under
# $W (which the caller creates and removes). Sets PROM_URL, PUSH_URL, PROM_PID, PUSH_PID,
# PROM_QUERY_LOG. prom_stop stops both (the caller's EXIT trap calls it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

prom_start() {
  local pport gport
  command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null || {
    echo "prometheus and prometheus-pushgateway are not installed (scripts/setup.sh installs them)" >&2
    return 1
  }
  gport=$(free_port)
  pport=$(free_port)
  PUSH_URL="http://127.0.0.1:$gport"
  PROM_URL="http://127.0.0.1:$pport"
  PROM_QUERY_LOG="$W/query.log"
  mkdir -p "$W/tsdb"
  cat >"$W/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  query_log_file: $PROM_QUERY_LOG
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$gport"]
YML
  # Debian's default persists to /var/lib/prometheus: keep everything in $W
  prometheus-pushgateway --web.listen-address="127.0.0.1:$gport" --persistence.file="$W/pushgateway.data" \
    >"$W/pushgateway.log" 2>&1 &
  PUSH_PID=$!
  prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/tsdb" \
    --web.listen-address="127.0.0.1:$pport" --query.lookback-delta=5s >"$W/prometheus.log" 2>&1 &
  PROM_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "$PROM_URL/-/ready" >/dev/null 2>&1 && curl -sf "$PUSH_URL/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "prometheus or the pushgateway did not become ready; logs:" >&2
  tail -5 "$W/prometheus.log" "$W/pushgateway.log" >&2
  return 1
}

prom_stop() {
  [ -n "${PROM_PID:-}" ] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  [ -n "${PUSH_PID:-}" ] && kill "$PUSH_PID" 2>/dev/null && wait "$PUSH_PID" 2>/dev/null
  PROM_PID= PUSH_PID=
}

# push JOB TENANT 'metric value\n...': replaces the group {job, tenant} on the pushgateway.
push() {
  printf '%b\n' "$3" | curl -sf --data-binary @- "$PUSH_URL/metrics/job/$1/tenant/$2" >/dev/null
}

# prom_wait QUERY WANT: until the instant query QUERY returns WANT series (curl, 30 s).
prom_wait() {
  local n
  for _ in $(seq 1 150); do
    n=$(curl -sf --get --data-urlencode "query=$1" "$PROM_URL/api/v1/query" | jq '.data.result | length' 2>/dev/null)
    [ "$n" = "$2" ] && return 0
    sleep 0.2
  done
  echo "timed out waiting for $1 to return $2 series (last: $n)" >&2
  return 1
}
