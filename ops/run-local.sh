#!/usr/bin/env bash
# Runs the whole pipeline on this machine, on loopback: makes sure MariaDB and
# Mosquitto are installed and running, builds the bridge and the publisher,
# creates the database and its least-privilege account, migrates, starts the
# bridge, lets three simulated Pis publish for a while, and shows the
# readings arriving (rows, rate, rejects). The bridge keeps running after the
# demo; `ops/run-local.sh --stop` stops it.
#
# Usage: ops/run-local.sh [--demo-seconds N] [--stop]
# Everything it writes (logs, generated passwords, queues) is under out/local/.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=out/local
DEMO_SECONDS=20
HTTP=127.0.0.1:9464
DEVICES=(pi-kitchen pi-office pi-lab)

say() { printf '\n== %s\n' "$*"; }
die() { printf 'run-local: error: %s\n' "$*" >&2; exit 1; }

stop_all() {
    local pidfile pid
    for pidfile in "$STATE"/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(<"$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            # The bridge flushes and acknowledges before it exits.
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    done
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --demo-seconds) DEMO_SECONDS=${2:?}; shift 2 ;;
        --stop) stop_all; echo "stopped"; exit 0 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

say "Services (MariaDB, Mosquitto)"
bash ops/services.sh

say "Build (release)"
cargo build --release --locked -p co2-bridge -p co2-publisher
BRIDGE=target/release/co2-bridge
PUBLISHER=target/release/co2-publisher

say "Database co2 and its accounts"
mkdir -p "$STATE/secrets"
chmod 700 "$STATE/secrets"
for name in bridge grafana; do
    file="$STATE/secrets/db-$name-password"
    if [[ ! -s $file ]]; then
        (umask 077; openssl rand -base64 24 | tr -d '/+=\n' >"$file")
    fi
done
printf '[client]\nuser=root\nhost=127.0.0.1\nport=3306\n' >"$STATE/admin.cnf"
bash provisioning/mysql/apply.sh --database co2 \
    --bridge-password-file "$STATE/secrets/db-bridge-password" \
    --grafana-password-file "$STATE/secrets/db-grafana-password" \
    --admin-defaults-file "$STATE/admin.cnf"
# Schema changes need an admin account; the bridge itself runs with DML only.
CO2_BRIDGE__DATABASE__URL=mysql://root@127.0.0.1:3306/co2 "$BRIDGE" migrate

say "Bridge"
stop_all
export CO2_BRIDGE__DATABASE__URL=mysql://co2_bridge@127.0.0.1:3306/co2
export CO2_BRIDGE__DATABASE__PASSWORD_FILE=$PWD/$STATE/secrets/db-bridge-password
export CO2_BRIDGE__DATABASE__MIGRATE_ON_START=false
export CO2_BRIDGE__HTTP__LISTEN=$HTTP
"$BRIDGE" check-config | sed 's/^/    /'
setsid "$BRIDGE" run >"$STATE/bridge.log" 2>&1 &
echo $! >"$STATE/bridge.pid"
for _ in $(seq 1 100); do
    curl -sf "http://$HTTP/readyz" >/dev/null && break
    kill -0 "$(<"$STATE/bridge.pid")" 2>/dev/null || { cat "$STATE/bridge.log"; die "the bridge exited"; }
    sleep 0.2
done
curl -sf "http://$HTTP/readyz" >/dev/null || { tail "$STATE/bridge.log"; die "the bridge is not ready"; }
echo "    ready: http://$HTTP/metrics (log: $STATE/bridge.log)"

say "Three simulated Pis publish for ${DEMO_SECONDS}s"
for device in "${DEVICES[@]}"; do
    CO2_PUBLISHER__DEVICE=$device \
    CO2_PUBLISHER__INTERVAL_MS=100 \
    CO2_PUBLISHER__SENSOR__KIND=simulated \
    CO2_PUBLISHER__QUEUE__PATH=$PWD/$STATE/queue-$device.sqlite3 \
    CO2_PUBLISHER__CLOCK__REQUIRE_SYNC=false \
        setsid "$PUBLISHER" run >"$STATE/publisher-$device.log" 2>&1 &
    echo $! >"$STATE/publisher-$device.pid"
done
# One malformed message, to show where rejects go.
mosquitto_pub -h 127.0.0.1 -q 1 -t co2/pi-lab/emissions -m 'not a reading'

metric() { curl -sf "http://$HTTP/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
rows() { mariadb -uroot -h127.0.0.1 -N co2 -e 'SELECT COUNT(*) FROM co2_emissions'; }
start_rows=$(rows)
start=$(date +%s)
printf '    %6s  %10s  %10s  %8s  %8s\n' secs "rows" "written" "rows/s" rejects
while (($(date +%s) - start < DEMO_SECONDS)); do
    sleep 2
    secs=$(($(date +%s) - start))
    now_rows=$(rows)
    printf '    %6s  %10s  %10s  %8s  %8s\n' "$secs" "$now_rows" "$(metric co2_bridge_rows_written_total)" \
        "$(( (now_rows - start_rows) / (secs > 0 ? secs : 1) ))" \
        "$(curl -sf "http://$HTTP/metrics" | awk '/^co2_bridge_messages_rejected_total/ { s += $2 } END { print s + 0 }')"
done
for device in "${DEVICES[@]}"; do
    kill -TERM "$(<"$STATE/publisher-$device.pid")" 2>/dev/null || true
    rm -f "$STATE/publisher-$device.pid"
done

say "What is in MySQL"
mariadb -uroot -h127.0.0.1 co2 -t -e "
    SELECT device, COUNT(*) AS readings, MIN(date_time) AS first, MAX(date_time) AS last,
           ROUND(AVG(emissions), 1) AS avg_ppm
      FROM co2_emissions GROUP BY device ORDER BY device;
    SELECT received_at, topic, reason, CAST(payload AS CHAR) AS payload
      FROM rejected_messages ORDER BY id DESC LIMIT 3;"
cat <<TXT

The bridge is still running (pid $(<"$STATE/bridge.pid")):
    metrics:   curl http://$HTTP/metrics
    readiness: curl http://$HTTP/readyz
    publish:   mosquitto_pub -h 127.0.0.1 -q 1 -t co2/my-pi/emissions -m "\$(date -u '+%F %T')|612.5"
    stop:      ops/run-local.sh --stop
TXT
