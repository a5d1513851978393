#!/usr/bin/env bash
# Installs what rbl needs on Debian 12 (as root): build dependencies, test tools and a running
# dockerd with the offline test image. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config liblua5.4-dev lua5.4 libuv1-dev libcurl4-openssl-dev
      libcjson-dev libssl-dev libyaml-dev libedit-dev libcmocka-dev python3 python3-yaml jq
      openssl curl docker.io busybox-static procps util-linux iproute2 hyperfine clang-format
      prometheus prometheus-pushgateway prometheus-alertmanager time clang)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "setup: installing kubectl (Debian's kubernetes-client)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# A dockerd of our own when none answers: the tests need the real Engine API.
sock=/var/run/docker.sock
if ! curl -sf --max-time 2 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/rbl-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    curl -sf --max-time 1 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -sf --unix-socket "$sock" http://d/_ping >/dev/null || { echo "setup: dockerd did not start; see /var/log/rbl-dockerd.log" >&2; tail -20 /var/log/rbl-dockerd.log >&2; exit 1; }
fi

# The test image, made offline from busybox-static (no registry is reachable).
if [ -x src/families/docker/tests/setup.sh ] || [ -f src/families/docker/tests/setup.sh ]; then
  bash src/families/docker/tests/setup.sh
fi
echo "setup: ok"
