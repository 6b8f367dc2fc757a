#!/usr/bin/env bash
# Make a private CA and a TLS server certificate for Mosquitto's 8883 listener
# (a test or a small deployment; for a public host name a certificate from a
# public CA works the same way: point the TLS drop-in at it).
#
# Usage: ops/make-certs.sh [options]
#   --san NAME          a name the devices use to reach the broker, repeatable:
#                       DNS:mqtt.example.org, IP:203.0.113.7 (a bare IP or name
#                       works too). Default: this host's names, localhost,
#                       127.0.0.1 and ::1. Include the public IP/DNS name the
#                       Pis connect to.
#   --out DIR           server certificate, key and a copy of ca.crt
#                       (default /etc/mosquitto/certs)
#   --ca-dir DIR        the CA (ca.key never leaves it; default /etc/co2-telemetry/ca)
#   --key-group GROUP   group that may read server.key (default mosquitto)
#   --days N            server certificate lifetime (default 825)
#   --renew             issue a new server certificate even if the current one is fine
#   --root DIR          prefix for every path (tests)
#   --dry-run           print what would be done
# Idempotent: keeps the CA, and keeps the server certificate while it is signed
# by that CA, has the requested names and is valid for 30 more days.
# Files: ca.key 0600 root:root; server.key 0640 root:GROUP; certificates 0644.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

sans=()
out=/etc/mosquitto/certs
ca_dir=/etc/co2-telemetry/ca
key_group=mosquitto
days=825
renew=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --san) sans+=("${2:?--san needs a value}"); shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --ca-dir) ca_dir=${2:?}; shift 2 ;;
        --key-group) key_group=${2:?}; shift 2 ;;
        --days) days=${2:?}; shift 2 ;;
        --renew) renew=1; shift ;;
        --root) ROOT=${2:?}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ $days =~ ^[0-9]+$ ]] || die "--days must be a number of days"
require_cmd openssl
if [[ $DRY_RUN == 0 ]] && ! is_root && [[ $ROOT == / ]]; then
    die "run as root (sudo $0 ...): it writes $out and $ca_dir"
fi

if [[ ${#sans[@]} -eq 0 ]]; then
    sans=("DNS:$(hostname)")
    fqdn=$(hostname -f 2>/dev/null || true)
    [[ -n $fqdn && $fqdn != "$(hostname)" ]] && sans+=("DNS:$fqdn")
    sans+=(DNS:localhost IP:127.0.0.1 IP:::1)
fi
# Normalise: bare IPs become IP:, bare names DNS:.
norm=()
for s in "${sans[@]}"; do
    case $s in
        DNS:* | IP:*) norm+=("$s") ;;
        *[!0-9.]*) if [[ $s == *:* ]]; then norm+=("IP:$s"); else norm+=("DNS:$s"); fi ;;
        *) norm+=("IP:$s") ;;
    esac
done
san_line=$(IFS=,; echo "${norm[*]}")
cn=${norm[0]#*:}

ca_dir_r=$(rootpath "$ca_dir")
out_r=$(rootpath "$out")
ca_key=$ca_dir_r/ca.key
ca_crt=$ca_dir_r/ca.crt

step "TLS certificates (CA in $ca_dir, server certificate in $out)"
ensure_dir "$ca_dir_r" root root 0700
ensure_dir "$out_r" root root 0755

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

if [[ -s $ca_key && -s $ca_crt ]]; then
    ok "CA $ca_crt exists (valid until $(openssl x509 -in "$ca_crt" -noout -enddate | cut -d= -f2))"
else
    change "create a private CA (EC P-256, 10 years): $ca_key, $ca_crt"
    if [[ $DRY_RUN == 0 ]]; then
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca_key" 2>/dev/null)
        openssl req -x509 -new -key "$ca_key" -sha256 -days 3650 -subj "/CN=co2-telemetry private CA" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" -out "$ca_crt"
    fi
fi
ensure_owner_mode "$ca_key" root root 0600
ensure_owner_mode "$ca_crt" root root 0644

srv_key=$out_r/server.key
srv_crt=$out_r/server.crt
need_cert=1
reason="no server certificate yet"
if [[ -s $srv_key && -s $srv_crt && -s $ca_crt ]]; then
    # The names asked for last time, as given (openssl prints IPv6 differently).
    have_sans=$(cat -- "$out_r/server.san" 2>/dev/null || true)
    if [[ $renew == 1 ]]; then
        reason="--renew"
    elif ! openssl verify -CAfile "$ca_crt" "$srv_crt" >/dev/null 2>&1; then
        reason="the server certificate is not signed by $ca_crt"
    elif ! openssl x509 -in "$srv_crt" -noout -checkend $((30 * 86400)) >/dev/null; then
        reason="the server certificate expires within 30 days"
    elif [[ $have_sans != "$san_line" ]]; then
        reason="its names (${have_sans:-unknown}) differ from the requested ($san_line)"
    elif [[ $(openssl pkey -in "$srv_key" -pubout 2>/dev/null) != $(openssl x509 -in "$srv_crt" -noout -pubkey) ]]; then
        reason="server.key does not match server.crt"
    else
        need_cert=0
    fi
fi
if [[ $need_cert == 0 ]]; then
    ok "server certificate $srv_crt valid for $san_line"
else
    change "issue server certificate for $san_line ($days days): $reason"
    if [[ $DRY_RUN == 0 ]]; then
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/server.key" 2>/dev/null)
        openssl req -new -key "$tmp/server.key" -subj "/CN=$cn" -out "$tmp/server.csr"
        cat >"$tmp/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san_line
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EOF
        openssl x509 -req -in "$tmp/server.csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial \
            -CAserial "$ca_dir_r/ca.srl" -days "$days" -sha256 -extfile "$tmp/ext.cnf" \
            -out "$tmp/server.crt" 2>/dev/null
        install -m 0640 -- "$tmp/server.key" "$srv_key"
        install -m 0644 -- "$tmp/server.crt" "$srv_crt"
        printf '%s\n' "$san_line" >"$out_r/server.san"
    fi
fi
ensure_owner_mode "$srv_key" root "$key_group" 0640
ensure_owner_mode "$srv_crt" root root 0644
if [[ -f $out_r/ca.crt ]] && cmp -s -- "$ca_crt" "$out_r/ca.crt"; then
    ok "$out/ca.crt (give this file to the devices) up to date"
else
    change "copy the CA certificate to $out/ca.crt (give this file to the devices)"
    run install -m 0644 -- "$ca_crt" "$out_r/ca.crt"
fi
info "  certificate changes: $CHANGES"
