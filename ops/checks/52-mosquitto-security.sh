#!/usr/bin/env bash
# Mosquitto security, for real: the installer renders provisioning/mosquitto
# (drop-ins, the ACL derived from the bridge's config by `co2-bridge acl`,
# password file, TLS certificate) into a temp root, a test-owned mosquitto
# runs it on free 127.0.0.1 ports, and then: anonymous
# and wrong-password clients are refused; a device cannot publish into another
# device's topic (the bridge, subscribed to co2/#, never receives it); the
# bridge cannot publish; devices cannot read; the bridge's session is queued
# across a broker restart (persistence); TLS works with the generated CA and
# fails without it; ops/add-device.sh is idempotent and --rotate works.
# The system's /etc/mosquitto is never touched.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 52-mosquitto-security: provisioned Mosquitto config on a test broker"
for c in mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd openssl python3; do
    command -v "$c" >/dev/null || { fail "prerequisite $c (apt-get install mosquitto mosquitto-clients openssl)"; finish; }
done
# The broker's ACL is derived from the bridge's config by the bridge binary.
bridge_bin=$(built_bin co2-bridge acl)
[[ -n $bridge_bin ]] || { fail "prerequisite: a co2-bridge with the acl command (cargo build -p co2-bridge; CO2_BRIDGE_BIN)"; finish; }

work=$(mktemp -d)
chmod 0755 "$work"
root=$work/root
mkdir -p "$root"
broker_pid=
sub_pid=
cleanup() {
    [[ -z $sub_pid ]] || kill "$sub_pid" 2>/dev/null || true
    [[ -z $broker_pid ]] || kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ -n ${KEEP_WORK:-} ]] || rm -rf -- "$work"
}
trap cleanup EXIT

port=$(free_port)
tport=$(free_port)
while [[ $tport == "$port" ]]; do tport=$(free_port); done
bport=$(free_port)
while [[ $bport == "$port" || $bport == "$tport" ]]; do bport=$(free_port); done
inst=("$ops/install-server.sh" --root "$root" --bridge-bin "$bridge_bin" --only "secrets,tls,mosquitto"
    --mqtt-port "$port" --mqtts-port "$tport" --bridge-port "$bport" --tls-san DNS:localhost --tls-san IP:127.0.0.1)

check "install-server.sh renders the Mosquitto config (--root)" "${inst[@]}"
conf_d=$root/etc/mosquitto/conf.d
check "no anonymous access in the rendered config" grep -qx "allow_anonymous false" "$conf_d/10-co2-telemetry.conf"
check "plain listener is on loopback only by default" grep -qx "listener $port 127.0.0.1" "$conf_d/10-co2-telemetry.conf"
check "the bridge's own listener is on loopback" grep -qx "listener $bport 127.0.0.1" "$conf_d/10-co2-telemetry.conf"
sed 's/@BRIDGE_PORT@/1884/; s/@MQTT_USER@/co2-bridge/; s/@DB_USER@/co2_bridge/; s/@DB_HOST@/127.0.0.1/; s/@DB_PORT@/3306/; s/@DB_NAME@/co2/; s/@DEVICE_LISTEN_LINE@//' \
    "$ops/config/bridge.toml.in" >"$work/bridge.toml"
check "the ACL's routes part is what co2-bridge acl prints for the installed config" \
    cmp "$root/etc/mosquitto/co2-telemetry.acl.d/00-routes.acl" <(env -i "$bridge_bin" acl --config "$work/bridge.toml")
check "the ACL is 0640 root:mosquitto (device names are no one else's business)" \
    test "$(stat -c '%a %U:%G' "$root/etc/mosquitto/co2-telemetry.acl")" == "640 root:mosquitto"
check "persistence is on" grep -qx "persistence true" "$conf_d/10-co2-telemetry.conf"
check "queue limits are set deliberately" grep -qx "max_queued_messages 250000" "$conf_d/10-co2-telemetry.conf"
check "password file is 0640 root:mosquitto" test "$(stat -c '%a %U:%G' "$root/etc/mosquitto/co2-telemetry.passwd")" == "640 root:mosquitto"
check "secrets are 0600 root in a 0700 directory" test "$(stat -c '%a' "$root/etc/co2-telemetry/secrets") $(stat -c '%a %U' "$root/etc/co2-telemetry/secrets/bridge-mqtt-password")" == "700 600 root"
check "server key is 0640 root:mosquitto, CA key 0600" test "$(stat -c '%a %G' "$root/etc/mosquitto/certs/server.key") $(stat -c '%a' "$root/etc/co2-telemetry/ca/ca.key")" == "640 mosquitto 600"

# Devices.
for d in devA devB; do
    check "add-device.sh $d" "$ops/add-device.sh" --root "$root" --host localhost --port "$tport" --out "$work/bundle-$d" "$d"
done
check "the bundle's password file is 0600" test "$(stat -c '%a' "$work/bundle-devA/mqtt-password")" == 600
# shellcheck disable=SC2016 # the inner scripts expand their own "$1".. arguments
check "add-device prints a publisher TOML for the device" \
    bash -c '"$1" --root "$2" --host localhost --port "$3" --out "$4" devA 2>/dev/null | grep -qx "username = \"devA\""' _ "$ops/add-device.sh" "$root" "$tport" "$work/bundle-devA"
# shellcheck disable=SC2016
check "the TOML holds no password" bash -c '! grep -qiE "^password *=" "$1"' _ "$work/bundle-devA/publisher.toml"
# shellcheck disable=SC2016
check "no plaintext password in the broker's password file" bash -c '! grep -qF "$(cat "$1")" "$2"' _ "$work/bundle-devA/mqtt-password" "$root/etc/mosquitto/co2-telemetry.passwd"
check_not "add-device refuses the bridge's own user name" "$ops/add-device.sh" --root "$root" --out "$work/x" co2-bridge
check_not "add-device refuses a name with a topic wildcard" "$ops/add-device.sh" --root "$root" --out "$work/x" 'dev+x'

sum_before=$(sha256sum <"$root/etc/mosquitto/co2-telemetry.passwd")
"$ops/add-device.sh" --root "$root" --host localhost --out "$work/bundle-devA" devA >/dev/null 2>&1
check "add-device again (no --rotate) leaves the password file as it was" test "$sum_before" == "$(sha256sum <"$root/etc/mosquitto/co2-telemetry.passwd")"
"${inst[@]}" >"$work/second.out" 2>&1
check "install-server re-run: 0 changes (bridge password verified, not re-hashed)" grep -qx "done: changes: 0" "$work/second.out"

# Broker: a main file like Debian's (pid, persistence location, log) that includes the drop-ins.
mkdir -p "$work/data"
chown mosquitto:mosquitto "$work/data" 2>/dev/null || true
cat >"$work/mosquitto.conf" <<EOF
pid_file $work/data/mosquitto.pid
persistence_location $work/data/
log_dest file $work/data/mosquitto.log
log_type all
user mosquitto
include_dir $conf_d
EOF
touch "$work/data/mosquitto.log"
chown mosquitto "$work/data/mosquitto.log" 2>/dev/null || true
start_broker() {
    mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.stderr" 2>&1 &
    broker_pid=$!
    wait_port 127.0.0.1 "$port" && wait_port 127.0.0.1 "$tport" && wait_port 127.0.0.1 "$bport"
}
stop_broker() {
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
}
if ! start_broker; then
    fail "test broker starts with the rendered config"
    sed 's/^/      | /' "$work/mosquitto.stderr" "$work/data/mosquitto.log" | tail -20
    finish
fi
pass "test broker starts with the rendered config (ports $port, TLS $tport)"

bpw=$(cat "$root/etc/co2-telemetry/secrets/bridge-mqtt-password")
apw=$(cat "$work/bundle-devA/mqtt-password")
bbpw=$(cat "$work/bundle-devB/mqtt-password")
P=(-h 127.0.0.1 -p "$port")
pub() { mosquitto_pub "${P[@]}" -q 1 "$@"; }

check_not "anonymous publish is refused" pub -t co2/devA/emissions -m anon
check_not "anonymous subscribe is refused" mosquitto_sub "${P[@]}" -t 'co2/#' -C 1 -W 2
check_not "a wrong password is refused" pub -u devA -P not-the-password -t co2/devA/emissions -m x

# The bridge's persistent session, as the bridge uses it (v5, QoS 1, fixed id,
# on its own listener).
bridge_sub=(mosquitto_sub -h 127.0.0.1 -p "$bport" -V mqttv5 -c -x 3600 -i co2-bridge-check -q 1 -u co2-bridge -P "$bpw" -t 'co2/#' -v)
"${bridge_sub[@]}" >"$work/got.txt" 2>"$work/sub.err" &
sub_pid=$!
# A device trying to read the whole stream (it may connect, but gets nothing).
mosquitto_sub "${P[@]}" -u devA -P "$apw" -t 'co2/#' -q 1 -v -W 4 >"$work/devA-read.txt" 2>/dev/null &
deva_pid=$!
marker=0
for _ in $(seq 50); do
    pub -u devA -P "$apw" -t co2/devA/emissions -m "marker" >/dev/null 2>&1 || true
    if grep -q marker "$work/got.txt"; then marker=1; break; fi
    sleep 0.2
done
check "the bridge user receives a device's reading (co2/devA/emissions)" test "$marker" == 1

pub -u devA -P "$apw" -t co2/devB/emissions -m "A-into-B-v3" >/dev/null 2>&1 || true
pub -V mqttv5 -u devA -P "$apw" -t co2/devB/emissions -m "A-into-B-v5" >"$work/v5.out" 2>&1 || true
pub -u devA -P "$apw" -t co2/emissions -m "A-legacy" >/dev/null 2>&1 || true
pub -u co2-bridge -P "$bpw" -t co2/devA/emissions -m "bridge-as-A" >/dev/null 2>&1 || true
pub -V mqttv5 -u co2-bridge -P "$bpw" -t co2/co2-bridge/emissions -m "bridge-own" >"$work/bv5.out" 2>&1 || true
pub -u devB -P "$bbpw" -t co2/devB/emissions -m "B-own" >/dev/null 2>&1 || true
# devB's own reading is the last sent; once it arrives, all earlier ones had their chance.
for _ in $(seq 50); do grep -q B-own "$work/got.txt" && break; sleep 0.1; done
check "device B's own reading arrives" grep -qx "co2/devB/emissions B-own" "$work/got.txt"
check_not "device A cannot publish into device B's topic (v3.1.1: dropped)" grep -q A-into-B-v3 "$work/got.txt"
check_not "device A cannot publish into device B's topic (v5: dropped)" grep -q A-into-B-v5 "$work/got.txt"
check "... and an MQTT v5 client is told 'Not authorized'" grep -qi "not authori" "$work/v5.out"
check_not "devices cannot use the legacy shared topic" grep -q A-legacy "$work/got.txt"
check_not "the bridge user cannot publish into a device topic" grep -q bridge-as-A "$work/got.txt"
check_not "the bridge user cannot publish under its own name" grep -q bridge-own "$work/got.txt"
wait "$deva_pid" 2>/dev/null || true
check "a device cannot read the stream (its co2/# subscription received nothing)" test ! -s "$work/devA-read.txt"
kill "$sub_pid" 2>/dev/null || true
wait "$sub_pid" 2>/dev/null || true
sub_pid=

# Persistence: readings for the offline bridge survive a broker restart.
for i in 1 2 3 4 5; do pub -u devA -P "$apw" -t co2/devA/emissions -m "queued-$i"; done
stop_broker
start_broker || fail "broker restarts from its persistence file"
"${bridge_sub[@]}" -C 5 -W 10 >"$work/queued.txt" 2>/dev/null || true
check "5 readings queued for the offline bridge survive a broker restart" test "$(grep -c 'queued-' "$work/queued.txt")" -eq 5

# TLS with the generated CA.
T=(-h localhost -p "$tport" -u devA -P "$apw" -t co2/devA/emissions -q 1)
check "TLS publish works with the generated CA" mosquitto_pub "${T[@]}" --cafile "$root/etc/mosquitto/certs/ca.crt" -m tls-ok
check_not "TLS publish fails without the CA (system trust store)" mosquitto_pub "${T[@]}" --capath /etc/ssl/certs -m tls-no-ca
check_not "plain MQTT on the TLS port fails" mosquitto_pub -h 127.0.0.1 -p "$tport" -u devA -P "$apw" -t co2/devA/emissions -m plain
check_not "TLS without credentials is refused" mosquitto_pub -h localhost -p "$tport" --cafile "$root/etc/mosquitto/certs/ca.crt" -t co2/devA/emissions -m x

# Password rotation: the old password stops working after a reload (SIGHUP).
"$ops/add-device.sh" --root "$root" --rotate --host localhost --out "$work/bundle-devA" devA >/dev/null 2>&1
kill -HUP "$broker_pid"
sleep 0.5
check "after --rotate and a reload, the new password works" pub -u devA -P "$(cat "$work/bundle-devA/mqtt-password")" -t co2/devA/emissions -m rotated
check_not "after --rotate and a reload, the old password is refused" pub -u devA -P "$apw" -t co2/devA/emissions -m old
"$ops/add-device.sh" --root "$root" --remove devB >/dev/null 2>&1
kill -HUP "$broker_pid"
sleep 0.5
check_not "after --remove, device B is refused" pub -u devB -P "$bbpw" -t co2/devB/emissions -m removed

finish
