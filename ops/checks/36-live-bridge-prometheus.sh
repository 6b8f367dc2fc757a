#!/usr/bin/env bash
# End to end for the observability stack: a real co2-bridge (built by
# ops/test.sh) carries real traffic from the local Mosquitto into a throwaway
# database; then
#   - its /metrics exports exactly the names and types in metric-names.txt,
#   - a private Prometheus with the repository's provisioning/prometheus config
#     and rules scrapes it, and every dashboard and alert expression evaluates
#     without error, with data for the dashboards' queries.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

BRIDGE=${CO2_BRIDGE_BIN:-target/debug/co2-bridge}
[[ -x $BRIDGE ]] || { echo "FAIL - $BRIDGE is missing: run cargo build -p co2-bridge"; echo "0 passed, 1 failed"; exit 1; }

db="co2chk_live_$$"
prefix="chk$$"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
work=$(mktemp -d)
bridge_pid=
feeder=
cleanup() {
    [[ -z $feeder ]] || kill "$feeder" 2>/dev/null || true
    [[ -z $bridge_pid ]] || kill -TERM "$bridge_pid" 2>/dev/null || true
    [[ -z $bridge_pid ]] || wait "$bridge_pid" 2>/dev/null || true
    mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`" || true
    rm -rf "$work"
}
trap cleanup EXIT

mariadb -uroot -h127.0.0.1 -e "CREATE DATABASE \`$db\`"
CO2_BRIDGE__DATABASE__URL="mysql://root@127.0.0.1:3306/$db" \
CO2_BRIDGE__MQTT__CLIENT_ID="$prefix-bridge" \
CO2_BRIDGE__MQTT__TOPICS="$prefix/+/emissions" \
CO2_BRIDGE__HTTP__LISTEN="127.0.0.1:$port" \
CO2_BRIDGE__COMPLETENESS__SCAN_INTERVAL_S=1 CO2_BRIDGE__COMPLETENESS__LATE_AFTER_S=4 \
    "$BRIDGE" run >"$work/bridge.log" 2>&1 &
bridge_pid=$!
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
done
check "bridge is ready" curl -sf "http://127.0.0.1:$port/readyz"

# Readings from three devices (now-ish, so lag and last-seen are realistic) and one reject.
# pi-c numbers its readings (MQTT 5, as co2-publisher does): number 15 never
# comes, 20 comes last (after a scan saw it missing), so the completeness
# metrics have a loss and a late one.
stamp() { date -u -d "-$((60 - $1)) seconds" '+%F %T'; }
for i in $(seq 1 30); do
    for d in pi-a pi-b; do
        mosquitto_pub -h 127.0.0.1 -q 1 -t "$prefix/$d/emissions" -m "$(stamp "$i")|$((400 + i)).5"
    done
    # Its time is taken now; sent later it would fall on another reading's second.
    ((i == 20)) && late_stamp=$(stamp "$i")
    ((i == 15 || i == 20)) && continue
    mosquitto_pub -h 127.0.0.1 -q 1 -V 5 -D publish user-property co2-seq "00000000000000c3:$i" \
        -t "$prefix/pi-c/emissions" -m "$(stamp "$i")|$((400 + i)).5"
done
sleep 2
mosquitto_pub -h 127.0.0.1 -q 1 -V 5 -D publish user-property co2-seq "00000000000000c3:20" \
    -t "$prefix/pi-c/emissions" -m "$late_stamp|420.5"
mosquitto_pub -h 127.0.0.1 -q 1 -t "$prefix/pi-a/emissions" -m "garbage"
rows() { mariadb -uroot -h127.0.0.1 -N "$db" -e 'SELECT COUNT(*) FROM co2_emissions'; }
for _ in $(seq 1 100); do [[ $(rows) -ge 89 ]] && break; sleep 0.1; done
check "89 readings stored (pi-c's number 15 never came)" test "$(rows)" -eq 89
scrape_has() { curl -sf "http://127.0.0.1:$port/metrics" | grep -q "$1"; }
for _ in $(seq 1 150); do scrape_has 'co2_device_readings_missing_total{cause="lost",device="pi-c"} 1' && break; sleep 0.1; done
check "the completeness scan counts pi-c's lost reading" scrape_has 'co2_device_readings_missing_total{cause="lost",device="pi-c"} 1'
check "... and its late one" scrape_has 'co2_device_readings_late_total{device="pi-c"} 1'

# A device publishing live, one reading a second: its clock offset is
# steady after a few (the burst above is not live, so it sets none). One
# client for all of them (-l: a message per line), so that a slow start of
# mosquitto_pub on a busy machine does not make a reading arrive out of pace.
for _ in $(seq 1 8); do
    date -u '+%F %T.%3N|430'
    sleep 1
done | mosquitto_pub -h 127.0.0.1 -q 1 -t "$prefix/pi-clock/emissions" -l
for _ in $(seq 1 150); do scrape_has 'co2_device_clock_offset_seconds{device="pi-clock"}' && break; sleep 0.1; done
check "a live device's clock offset is exported" scrape_has 'co2_device_clock_offset_seconds{device="pi-clock"}'
curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics.txt"
# Keep readings flowing while Prometheus scrapes, so rates are not all zero.
(
    while :; do
        mosquitto_pub -h 127.0.0.1 -q 1 -t "$prefix/pi-a/emissions" -m "$(date -u '+%F %T.%3N')|420"
        sleep 0.2
    done
) &
feeder=$!
run_counted python3 "$CHECKS_LIB/metric_names_check.py" --scrape "$work/metrics.txt"
run_counted python3 "$CHECKS_LIB/promql_check.py" --scrape-target "127.0.0.1:$port" --require-data
kill "$feeder"
if ((FAILED)); then
    echo "--- bridge log"
    tail -20 "$work/bridge.log"
fi
finish
