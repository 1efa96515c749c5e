#!/bin/sh
# Generates the TLS test certificates into DIR (tests/test_tls runs it at
# test time; nothing private is ever committed). EC P-256 keys: fast.
#
#   ca.pem/ca.key          a test CA
#   server.pem/server.key  CN=localhost, SAN localhost + 127.0.0.1, by the CA
#   other.pem/other.key    CN=other.test, SAN other.test, by the CA (SNI)
#   expired.pem/.key       like server, but already expired
#   self.pem/self.key      self-signed localhost (not by the CA)
#   client.pem/client.key  a client certificate (clientAuth) by the CA
#   ca2.pem/ca2.key        an unrelated CA (a client cert nobody trusts)
#   client2.pem/.key       a client certificate by ca2
#
# Usage: make-certs.sh DIR
set -eu
dir=${1:?usage: make-certs.sh DIR}
openssl=${OPENSSL:-openssl}
mkdir -p "$dir"
cd "$dir"

key() {
    "$openssl" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# ca NAME CN
ca() {
    key "$1.key"
    "$openssl" req -x509 -new -key "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

# leaf NAME CN SAN EKU CA DAYS
leaf() {
    key "$1.key"
    "$openssl" req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\n' "$4" > "$1.ext"
    if test -n "$3"; then printf 'subjectAltName=%s\n' "$3" >> "$1.ext"; fi
    # -days -1 makes notAfter precede now: an expired certificate with
    # plain OpenSSL 3.0 commands (no faketime needed).
    "$openssl" x509 -req -in "$1.csr" -CA "$5.pem" -CAkey "$5.key" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
        -days "$6" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "globeflower test CA"
ca ca2 "globeflower untrusted CA"
leaf server localhost "DNS:localhost,IP:127.0.0.1" serverAuth ca 30
leaf other other.test "DNS:other.test" serverAuth ca 30
leaf expired localhost "DNS:localhost,IP:127.0.0.1" serverAuth ca -1
leaf client "globeflower test client" "" clientAuth ca 30
leaf client2 "untrusted client" "" clientAuth ca2 30

# self-signed server certificate
key self.key
"$openssl" req -x509 -new -key self.key -out self.pem -days 30 -subj "/CN=localhost" \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
