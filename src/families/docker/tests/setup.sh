#!/usr/bin/env bash
# Prepares a real Docker daemon for the docker tests and benches: installs docker.io and
# busybox-static when missing, starts dockerd when nothing answers on the socket, and builds
# the offline test image rbl-test/busybox:1 (a static busybox, its applets, root and nobody).
# Idempotent. The docker CLI is used here for setup only.
set -euo pipefail

IMAGE=${RBL_TEST_IMAGE:-rbl-test/busybox:1}
SOCK=${RBL_DOCKER_SOCK:-/var/run/docker.sock}

log() { echo "setup: $*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if ldd /bin/busybox >/dev/null 2>&1; then
  # a dynamically linked busybox would not run inside the image
  log "installing busybox-static (the busybox here is dynamic)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi

ping_ok() { curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; }

if ! ping_ok; then
  log "no daemon answers on $SOCK: starting dockerd"
  nohup dockerd >/tmp/rbl-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    ping_ok && break
    sleep 0.5
  done
  ping_ok || { log "dockerd did not come up (see /tmp/rbl-dockerd.log)"; exit 1; }
fi

# An image of that name made elsewhere may lack applets or users the tests need: the label
# marks ours (all busybox applets, root and nobody).
MARK=rbl.test.image=busybox-all-applets-1
have=$(docker image inspect -f '{{index .Config.Labels "rbl.test.image"}}' "$IMAGE" 2>/dev/null || true)
if [ "rbl.test.image=$have" != "$MARK" ]; then
  log "building $IMAGE from /bin/busybox"
  root=$(mktemp -d /tmp/rbl-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/nobody,proc,sys,dev,var/run}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  cat >"$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home/nobody:/bin/sh
PW
  cat >"$root/etc/group" <<'GR'
root:x:0:
nogroup:x:65534:
GR
  chown 65534:65534 "$root/home/nobody"
  tar -C "$root" -cf - . | docker import \
    -c 'ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin' -c 'CMD ["/bin/sh"]' -c "LABEL $MARK" \
    - "$IMAGE" >/dev/null
fi
log "ready: daemon on $SOCK, image $IMAGE"
