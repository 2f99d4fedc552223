#!/usr/bin/env bash
# Regenerate the EXAMPLE certificates used by conf/tessera.example.yaml and its test.
# They are fixtures, not secrets: never serve real traffic with them.
# Usage: certs/gen-certs.sh   (from the repository root; needs openssl)
set -euo pipefail
cd "$(dirname "$0")"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=Tessera example CA" -keyout example-ca.key -out example-ca.pem 2>/dev/null
leaf() { # name, SANs
  local name=$1 sans=$2
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$sans" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA example-ca.pem -CAkey example-ca.key -CAcreateserial \
    -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
leaf acme "DNS:saas.acme.example,DNS:*.acme.example"
leaf globex "DNS:api.globex.example"
rm -f example-ca.srl example-ca.key
chmod 600 ./*.key
echo "wrote certs/{example-ca,acme,globex}.pem and keys"
