#!/usr/bin/env bash
# Usage: mkcerts.sh DIR
# Creates in DIR (with the openssl CLI):
#   ca.crt / ca.key            test CA
#   server.crt / server.key    signed by ca, SAN IP:127.0.0.1, DNS:localhost
#   client.crt / client.key    signed by ca, CN=alice, O=sre
#   other-ca.crt / other-ca.key  an unrelated CA (for "CA mismatch must fail" tests)
set -euo pipefail
dir=${1:?usage: mkcerts.sh DIR}
mkdir -p "$dir"
cd "$dir"

quiet() { "$@" >/dev/null 2>&1 || { echo "mkcerts: failed: $*" >&2; "$@"; exit 1; }; }

mkca() { # name subject
    quiet openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -keyout "$1.key" -out "$1.crt" -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
}

mkleaf() { # name subject extfile-content
    quiet openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf '%s\n' "$3" > "$1.ext"
    quiet openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "$1.crt" -days 3650 -sha256 -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
}

mkca ca "/CN=rbl-test-ca"
mkca other-ca "/CN=rbl-other-ca"
mkleaf server "/CN=kube-standin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
mkleaf client "/O=sre/CN=alice" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 600 ./*.key
