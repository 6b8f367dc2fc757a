#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted inner scripts expand their own "$1".. arguments
# The provisioned broker with the example routes, rendered exactly as
# ops/install-server.sh renders it (--routes bridge/routes.example.toml, into a
# temp root, a throwaway database), run by a test-owned Mosquitto on free
# 127.0.0.1 ports, with the real bridge and publisher:
# - the installed bridge subscribes to every route and becomes ready;
# - a device publishes on every route's topic under its own name, and on the
#   topics without a device level it was granted (add-device.sh
#   --shared-topic), and each message is stored in its route's table;
# - another device is refused (MQTT v5: "not authorized") on the first one's
#   topics and on shared topics it was not granted, and nothing of it is stored;
# - the real co2-publisher (client id co2-publisher-<device>) works over TLS,
#   where the broker makes a device's user name its client id;
# - a device connecting with the bridge's client id on a device listener does
#   not disconnect the bridge, with one connection (co2-bridge) and with three
#   (co2-bridge-1..3): co2_bridge_mqtt_connections_total stays put and readings
#   keep landing. As a control, the same id on the bridge's own loopback
#   listener does take the session over, which is what the counter detects.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
repo=$(cd -- "$ops/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 55-mosquitto-routes: the provisioned broker with the example routes, the real bridge and publisher"
for c in mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd mariadb openssl python3; do
    command -v "$c" >/dev/null || { fail "prerequisite $c (apt-get install mosquitto mosquitto-clients mariadb-client openssl)"; finish; }
done
bridge_bin=$(built_bin co2-bridge acl)
pub_bin=$(built_bin co2-publisher)
if [[ -z $bridge_bin || -z $pub_bin ]]; then
    fail "prerequisite: co2-bridge (with acl) and co2-publisher built (cargo build -p co2-bridge -p co2-publisher; CO2_BRIDGE_BIN, CO2_PUBLISHER_BIN)"
    finish
fi

sfx=$(rand_suffix)
db=co2_t55_$sfx
bu=t55b_$sfx
gu=t55g_$sfx
work=$(mktemp -d)
chmod 0755 "$work"
root=$work/root
mkdir -p "$root"
broker_pid=
bridge_pid=
cleanup() {
    [[ -z $bridge_pid ]] || kill "$bridge_pid" 2>/dev/null || true
    [[ -z $broker_pid ]] || kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    mariadb -e "DROP DATABASE IF EXISTS \`$db\`; DROP USER IF EXISTS '$bu'@'127.0.0.1'; DROP USER IF EXISTS '$gu'@'127.0.0.1';" 2>/dev/null || true
    [[ -n ${KEEP_WORK:-} ]] || rm -rf -- "$work"
}
trap cleanup EXIT

ports=()
while [[ ${#ports[@]} -lt 4 ]]; do
    p=$(free_port)
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
done
port=${ports[0]}  # plain, devices
tport=${ports[1]} # TLS, devices
bport=${ports[2]} # the bridge's own listener
hport=${ports[3]} # the bridge's /metrics, /readyz

check "install-server.sh with --routes bridge/routes.example.toml (temp root, throwaway database)" \
    "$ops/install-server.sh" --root "$root" --bridge-bin "$bridge_bin" --routes "$repo/bridge/routes.example.toml" \
    --db-name "$db" --db-bridge-user "$bu" --db-grafana-user "$gu" \
    --mqtt-port "$port" --mqtts-port "$tport" --bridge-port "$bport" --tls-san DNS:localhost --tls-san IP:127.0.0.1 \
    --only "secrets,database,tls,mosquitto,bridge"
acl=$root/etc/mosquitto/co2-telemetry.acl
for t in "co2/%u/emissions" "sensors/%u/dht11" "camera/%u/snapshot"; do
    check "ACL: devices may publish on $t" grep -qx "pattern write $t" "$acl"
done
check_not "ACL: no pattern without %u (it would open a topic to every device)" grep -E '^pattern ' <(grep -v '%u' "$acl")

add() { "$ops/add-device.sh" --root "$root" --host localhost --port "$tport" --out "$work/bundle-$1" "$@" >/dev/null; }
check "add-device.sh devA --shared-topic bins/level --shared-topic camera/snapshot" \
    add devA --shared-topic bins/level --shared-topic camera/snapshot
check "add-device.sh devB" add devB
check "add-device.sh devP --sensor simulated (for the publisher)" add devP --sensor simulated
check_not "add-device.sh refuses a topic that is not a route's shared topic" add devB --shared-topic sensors/devB/dht11
check_not "add-device.sh refuses a device named like a bridge connection (co2-bridge-1)" add co2-bridge-1
check "ACL: devA alone is granted bins/level and camera/snapshot" \
    test "$(awk '/^user /{u=$2} /^topic write /{print u, $3}' "$acl" | tr '\n' ' ')" == "devA bins/level devA camera/snapshot "

# The broker: a main file like Debian's that includes the installed drop-ins.
mkdir -p "$work/data"
chown mosquitto:mosquitto "$work/data" 2>/dev/null || true
touch "$work/data/mosquitto.log"
chown mosquitto "$work/data/mosquitto.log" 2>/dev/null || true
printf 'pid_file %s/data/m.pid\npersistence_location %s/data/\nlog_dest file %s/data/mosquitto.log\nlog_type all\nuser mosquitto\ninclude_dir %s/etc/mosquitto/conf.d\n' \
    "$work" "$work" "$work" "$root" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.stderr" 2>&1 &
broker_pid=$!
if ! { wait_port 127.0.0.1 "$port" && wait_port 127.0.0.1 "$tport" && wait_port 127.0.0.1 "$bport"; }; then
    fail "Mosquitto runs the installed config"
    tail -n 20 "$work/mosquitto.stderr" "$work/data/mosquitto.log" | sed 's/^/      | /'
    finish
fi
pass "Mosquitto runs the installed config (devices: $port, TLS $tport; bridge: $bport)"
blog=$work/data/mosquitto.log

# The bridge, as the unit runs it: installed binary, config and credentials.
secrets=$root/etc/co2-telemetry/secrets
start_bridge() { # extra environment (KEY=VALUE...)
    env CO2_BRIDGE__DATABASE__PASSWORD_FILE="$secrets/bridge-db-password" \
        CO2_BRIDGE__MQTT__PASSWORD_FILE="$secrets/bridge-mqtt-password" \
        CO2_BRIDGE__HTTP__LISTEN="127.0.0.1:$hport" "$@" \
        "$root/usr/local/bin/co2-bridge" run --config "$root/etc/co2-bridge/bridge.toml" >>"$work/bridge.log" 2>&1 &
    bridge_pid=$!
}
stop_bridge() {
    kill -TERM "$bridge_pid" 2>/dev/null || true
    wait "$bridge_pid" 2>/dev/null || true
    bridge_pid=
}
ready() { python3 -c 'import sys,urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)' "http://127.0.0.1:$hport/readyz" 2>/dev/null; }
wait_ready() { for _ in $(seq 150); do ready && return 0; sleep 0.2; done; return 1; }
metric() { # NAME: the sum of its samples
    python3 - "http://127.0.0.1:$hport/metrics" "$1" <<'EOF'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
print(int(sum(float(m.group(1)) for m in re.finditer(r"^" + re.escape(sys.argv[2]) + r"(?:\{[^}]*\})? (\S+)$", text, re.M))))
EOF
}
sql() { mariadb -NBe "$1" "$db"; }
wait_for() { # EXPECTED WHAT COMMAND...: wait until COMMAND prints EXPECTED
    local want=$1 what=$2 got=
    shift 2
    for _ in $(seq 75); do
        got=$("$@" 2>/dev/null || echo "?")
        [[ $got == "$want" ]] && return 0
        sleep 0.2
    done
    echo "$what is $got, wanted $want"
    return 1
}
wait_rows() { wait_for "$2" "the row count of ($1)" sql "$1"; } # SQL EXPECTED
wait_metric() { wait_for "$2" "$1" metric "$1"; }              # NAME EXPECTED

start_bridge
if ! wait_ready; then
    fail "the installed bridge with the example routes becomes ready (every subscription granted)"
    tail -n 20 "$work/bridge.log" | sed 's/^/      | /'
    finish
fi
pass "the installed bridge with the example routes becomes ready (every subscription granted)"

pw() { cat "$work/bundle-$1/mqtt-password"; }
pub() { # USER TOPIC PAYLOAD [mosquitto_pub options]: MQTT v5, QoS 1, plain device listener
    local user=$1 topic=$2 payload=$3
    shift 3
    mosquitto_pub -h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -u "$user" -P "$(pw "$user")" -t "$topic" -m "$payload" "$@"
}
png=$'\x89PNG\r\n\x1a\n'
b64png=$(printf '%s' "${png}devA-json" | base64 -w0)

# devA on every route, under its own name and on its granted shared topics.
check "devA publishes co2/devA/emissions" pub devA co2/devA/emissions "2024-05-01 10:00:01|411.11"
check "devA publishes sensors/devA/dht11" pub devA sensors/devA/dht11 '{"temp": 21.5, "humidity": 40, "time": "2024-05-01T10:00:02Z"}'
check "devA publishes camera/devA/snapshot (raw PNG)" pub devA camera/devA/snapshot "${png}devA-raw"
check "devA publishes bins/level (granted)" pub devA bins/level "42 bin-a1 2024-05-01 10:00:04"
check "devA publishes camera/snapshot (granted)" pub devA camera/snapshot "{\"m_id\": \"devA\", \"datetime\": \"2024-05-01 10:00:05\", \"photo\": \"$b64png\"}"
check "the CO2 reading is stored (co2_emissions)" wait_rows "SELECT COUNT(*) FROM co2_emissions WHERE device='devA' AND emissions=411.11" 1
check "the DHT11 reading is stored (readings)" wait_rows "SELECT COUNT(*) FROM readings WHERE device='devA' AND topic='sensors/devA/dht11' AND field IN ('temp','humidity')" 2
check "both snapshots are stored (images)" wait_rows "SELECT COUNT(*) FROM images WHERE device='devA'" 2
check "the bin level is stored (bin_levels)" wait_rows "SELECT COUNT(*) FROM bin_levels WHERE bin_id='bin-a1' AND level=42" 1

# devB on devA's topics and on shared topics it was not granted.
refused() { # TOPIC PAYLOAD: devB is told "not authorized"
    pub devB "$1" "$2" >"$work/refused.out" 2>&1 || true
    grep -qi "not authori" "$work/refused.out"
}
check "devB is refused on co2/devA/emissions" refused co2/devA/emissions "2024-05-01 10:00:11|666.66"
check "devB is refused on sensors/devA/dht11" refused sensors/devA/dht11 '{"temp": 66.6, "time": "2024-05-01T10:00:12Z"}'
check "devB is refused on camera/devA/snapshot" refused camera/devA/snapshot "${png}devB-as-devA"
check "devB is refused on bins/level (not granted)" refused bins/level "66 bin-b1 2024-05-01 10:00:14"
check "devB is refused on camera/snapshot (not granted)" refused camera/snapshot '{"m_id": "devB", "photo": "iVBORw0KGgo="}'
check "devA is refused on the legacy co2/emissions (granted to no device)" bash -c \
    'mosquitto_pub -h 127.0.0.1 -p "$1" -V mqttv5 -q 1 -u devA -P "$2" -t co2/emissions -m "2024-05-01 10:00:16|616.16" 2>&1 | grep -qi "not authori"' _ "$port" "$(pw devA)"
check "devB publishes its own co2/devB/emissions" pub devB co2/devB/emissions "2024-05-01 10:00:17|422.22"
# devB's own reading is the last one sent: once it is stored, the others had their chance.
check "devB's own reading is stored" wait_rows "SELECT COUNT(*) FROM co2_emissions WHERE device='devB' AND emissions=422.22" 1
check "nothing devB sent on other topics was stored or dead-lettered" test "$(sql "SELECT
    (SELECT COUNT(*) FROM co2_emissions WHERE emissions IN (666.66, 616.16)) +
    (SELECT COUNT(*) FROM readings WHERE value = 66.6) +
    (SELECT COUNT(*) FROM images WHERE device <> 'devA' OR CAST(data AS CHAR) LIKE '%devB%') +
    (SELECT COUNT(*) FROM bin_levels WHERE bin_id = 'bin-b1') +
    (SELECT COUNT(*) FROM rejected_messages)")" == 0

# The publisher: its own client id becomes its user name on the TLS listener.
check "co2-publisher publishes 3 readings over TLS as devP" env \
    CO2_PUBLISHER__MQTT__PASSWORD_FILE="$work/bundle-devP/mqtt-password" \
    CO2_PUBLISHER__MQTT__TLS__CA_FILE="$root/etc/mosquitto/certs/ca.crt" \
    CO2_PUBLISHER__QUEUE__PATH="$work/devP-queue.sqlite3" \
    CO2_PUBLISHER__INTERVAL_MS=300 CO2_PUBLISHER__MAX_READINGS=3 \
    timeout 60 "$pub_bin" run --config "$work/bundle-devP/publisher.toml"
check "... and the bridge stores them" wait_rows "SELECT COUNT(*) FROM co2_emissions WHERE device='devP'" 3
check "the broker knew the publisher by its user name (sent co2-publisher-devP)" \
    grep -qE "New client connected from .* as devP \(.*u'devP'\)" "$blog"

# The bridge's client id, taken by a device on the device listeners.
takeover_on_device_listeners() { # CLIENT_ID
    local id=$1
    mosquitto_pub -h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -i "$id" -u devB -P "$(pw devB)" -t co2/devB/emissions -m "2024-05-01 10:01:0${2}|433.3${2}"
    mosquitto_pub -h localhost -p "$tport" --cafile "$root/etc/mosquitto/certs/ca.crt" -q 1 -i "$id" -u devB -P "$(pw devB)" \
        -t co2/devB/emissions -m "2024-05-01 10:01:1${2}|433.4${2}"
    timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" -i "$id" -u devB -P "$(pw devB)" -t co2/devB/x -W 2 || true
}
takeovers_as_bridge_connections() {
    local n
    for n in 1 2 3; do takeover_on_device_listeners "co2-bridge-$n" "$((n + 1))" || return 1; done
}
conns=$(metric co2_bridge_mqtt_connections_total)
check "devB connects to the plain and TLS listeners with client id co2-bridge" takeover_on_device_listeners co2-bridge 1
check "devA publishes its next reading" pub devA co2/devA/emissions "2024-05-01 10:01:21|444.44"
check "... and it is stored" wait_rows "SELECT COUNT(*) FROM co2_emissions WHERE device='devA' AND emissions=444.44" 1
check "the bridge kept its one connection (co2_bridge_mqtt_connections_total still $conns)" test "$(metric co2_bridge_mqtt_connections_total)" == "$conns"
check "the broker never closed the bridge's connection for another client" bash -c '! grep -q "Client co2-bridge already connected" "$1"' _ "$blog"
check "the bridge is still ready" ready
check "devB's readings sent under the bridge's id are stored as devB's" \
    wait_rows "SELECT COUNT(*) FROM co2_emissions WHERE device='devB' AND emissions IN (433.31, 433.41)" 2

# Control: on the bridge's own listener the broker keeps ids as sent, so the
# same id does take the session over (the bridge reconnects by itself).
mosquitto_pub -h 127.0.0.1 -p "$bport" -V mqttv5 -q 1 -i co2-bridge -u devB -P "$(pw devB)" -t co2/devB/emissions -m "2024-05-01 10:01:31|455.55" >/dev/null 2>&1 || true
check "control: the same id on the bridge's loopback listener closes the bridge's connection" \
    bash -c 'for _ in $(seq 50); do grep -q "Client co2-bridge already connected" "$1" && exit 0; sleep 0.1; done; exit 1' _ "$blog"
check "control: ... which co2_bridge_mqtt_connections_total counts (the bridge reconnected)" \
    wait_metric co2_bridge_mqtt_connections_total "$((conns + 1))"
check "control: the bridge is ready again afterwards" wait_ready

# Three connections: client ids co2-bridge-1..3, a shared subscription each.
stop_bridge
start_bridge CO2_BRIDGE__MQTT__CONNECTIONS=3
check "the bridge with mqtt.connections = 3 becomes ready (shared subscriptions granted)" wait_ready
check "... over 3 connections" wait_metric co2_bridge_mqtt_connections_total 3
check "devB connects to the device listeners as co2-bridge-1, co2-bridge-2, co2-bridge-3" takeovers_as_bridge_connections
pub devA co2/devA/emissions "2024-05-01 10:02:01|477.77" >/dev/null 2>&1 || true
check "devA's reading is stored through the shared subscription" wait_rows "SELECT COUNT(*) FROM co2_emissions WHERE device='devA' AND emissions=477.77" 1
check "the bridge kept its 3 connections" test "$(metric co2_bridge_mqtt_connections_total)" == 3
check "the broker never closed one of them for another client" bash -c '! grep -qE "Client co2-bridge-[0-9] already connected" "$1"' _ "$blog"
check "the bridge is still ready" ready
stop_bridge

rm -f -- "$CHECK_LOG"
printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
[[ $FAILED -eq 0 ]]
