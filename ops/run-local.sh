#!/usr/bin/env bash
# Runs the whole pipeline on this machine, on loopback: makes sure MariaDB and
# Mosquitto are installed and running (ops/services.sh --for local: nothing
# the tests alone need), builds the bridge and the publisher (release),
# creates the database and its least-privilege account, migrates, starts the
# bridge, lets three simulated Pis publish for a while, and shows the
# readings arriving (published, rows, rate, rejects) in a live table and on
# the bridge's status page. The bridge keeps running after the demo;
# `ops/run-local.sh --stop` stops it. Each step's own output goes to
# out/local/setup.log; the terminal gets one line per step.
#
# Usage: ops/run-local.sh [--demo-seconds N] [--stop]
#   --http ADDR        the bridge's operator listener (default 127.0.0.1:9464)
#   --state DIR        logs, generated passwords, queues (default out/local)
#   --database NAME    database (default co2); --db-user NAME its bridge account
#   --prefix P         topic prefix (default co2); also names the MQTT clients
#   --bin-dir DIR      use co2-bridge and co2-publisher from DIR (no build)
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=out/local
DEMO_SECONDS=20
HTTP=127.0.0.1:9464
DATABASE=co2
DB_USER=co2_bridge
PREFIX=co2
BIN_DIR=
DEVICES=(pi-kitchen pi-office pi-lab)

say() { printf '\n== %s\n' "$*"; }
die() { printf 'run-local: error: %s\n' "$*" >&2; exit 1; }
# Seconds since the command started, for the lines that say how long a step took.
elapsed() { echo "$SECONDS s"; }

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

stop=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --demo-seconds) DEMO_SECONDS=${2:?}; shift 2 ;;
        --http) HTTP=${2:?}; shift 2 ;;
        --state) STATE=${2:?}; shift 2 ;;
        --database) DATABASE=${2:?}; shift 2 ;;
        --db-user) DB_USER=${2:?}; shift 2 ;;
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --bin-dir) BIN_DIR=${2:?}; shift 2 ;;
        --stop) stop=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if ((stop)); then stop_all; echo "stopped"; exit 0; fi
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
[[ $DATABASE =~ ^[A-Za-z0-9_]{1,64}$ ]] || die "--database must be [A-Za-z0-9_]{1,64}"
[[ $PREFIX =~ ^[A-Za-z0-9_-]{1,32}$ ]] || die "--prefix must be [A-Za-z0-9_-]{1,32}"
# The demo's clients get names of their own unless it is the default setup.
if [[ $PREFIX == co2 ]]; then CLIENT=co2; else CLIENT=$PREFIX; fi

printf 'Status page: http://%s/  (live once the bridge is up; also /status.json, /metrics)\n' "$HTTP"
SETUP_LOG=$STATE/setup.log
: >"$SETUP_LOG"
# A step's output goes to the setup log; on failure its tail comes to the terminal.
quietly() {
    if ! "$@" >>"$SETUP_LOG" 2>&1; then
        tail -n 20 "$SETUP_LOG" | sed 's/^/    | /' >&2
        die "$1 failed (whole output: $SETUP_LOG)"
    fi
}

say "Services: MariaDB and Mosquitto"
quietly bash ops/services.sh --for local
grep '^services: ' "$SETUP_LOG" | sed 's/^services: /    /'

if [[ -n $BIN_DIR ]]; then
    BRIDGE=$BIN_DIR/co2-bridge
    PUBLISHER=$BIN_DIR/co2-publisher
    [[ -x $BRIDGE && -x $PUBLISHER ]] || die "$BIN_DIR has no co2-bridge and co2-publisher"
else
    say "Build: co2-bridge and co2-publisher (release; the first time takes minutes)"
    command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs), then run this again"
    build_start=$SECONDS
    cargo build --release --locked -p co2-bridge -p co2-publisher >>"$SETUP_LOG" 2>&1 &
    build=$!
    if [[ -t 1 ]]; then
        # Minutes of silence look like a hang: one line that counts up instead.
        while kill -0 "$build" 2>/dev/null; do
            printf '\r    %d crates compiled, %d s' "$(grep -c '^ *Compiling ' "$SETUP_LOG")" $((SECONDS - build_start))
            sleep 1
        done
        printf '\r\033[K'
    fi
    if ! wait "$build"; then
        tail -n 20 "$SETUP_LOG" | sed 's/^/    | /' >&2
        die "cargo build failed (whole output: $SETUP_LOG)"
    fi
    echo "    built in $((SECONDS - build_start)) s"
    target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    BRIDGE=$target_dir/release/co2-bridge
    PUBLISHER=$target_dir/release/co2-publisher
fi

say "Database $DATABASE, its accounts and schema"
mkdir -p "$STATE/secrets"
chmod 700 "$STATE/secrets"
for name in bridge grafana; do
    file="$STATE/secrets/db-$name-password"
    if [[ ! -s $file ]]; then
        (umask 077; openssl rand -base64 24 | tr -d '/+=\n' >"$file")
    fi
done
printf '[client]\nuser=root\nhost=127.0.0.1\nport=3306\n' >"$STATE/admin.cnf"
quietly bash provisioning/mysql/apply.sh --database "$DATABASE" \
    --bridge-user "$DB_USER" --grafana-user "${DB_USER}_grafana" \
    --bridge-password-file "$STATE/secrets/db-bridge-password" \
    --grafana-password-file "$STATE/secrets/db-grafana-password" \
    --admin-defaults-file "$STATE/admin.cnf"
# Schema changes need an admin account; the bridge itself runs with DML only.
CO2_BRIDGE__DATABASE__URL=mysql://root@127.0.0.1:3306/$DATABASE quietly "$BRIDGE" migrate
echo "    accounts $DB_USER (the bridge: DML only) and ${DB_USER}_grafana (read only); passwords in $STATE/secrets"

say "Bridge"
stop_all
export CO2_BRIDGE__DATABASE__URL=mysql://$DB_USER@127.0.0.1:3306/$DATABASE
export CO2_BRIDGE__DATABASE__PASSWORD_FILE=$STATE/secrets/db-bridge-password
export CO2_BRIDGE__DATABASE__MIGRATE_ON_START=false
export CO2_BRIDGE__HTTP__LISTEN=$HTTP
if [[ $PREFIX != co2 ]]; then
    # Beside the default setup: its own session and topics, nothing shared with it.
    export CO2_BRIDGE__MQTT__CLIENT_ID=$CLIENT-bridge
    export CO2_BRIDGE__MQTT__TOPICS=$PREFIX/+/emissions
fi
export CO2_BRIDGE__STATE__DIR=$STATE/bridge-state
setsid "$BRIDGE" run >"$STATE/bridge.log" 2>&1 &
echo $! >"$STATE/bridge.pid"
for _ in $(seq 1 100); do
    curl -sf "http://$HTTP/readyz" >/dev/null && break
    kill -0 "$(<"$STATE/bridge.pid")" 2>/dev/null || { cat "$STATE/bridge.log"; die "the bridge exited"; }
    sleep 0.2
done
curl -sf "http://$HTTP/readyz" >/dev/null || { tail "$STATE/bridge.log"; die "the bridge is not ready"; }
echo "    ready after $(elapsed): http://$HTTP/ (its effective configuration: http://$HTTP/#config; log: $STATE/bridge.log)"

say "Three simulated Pis publish for ${DEMO_SECONDS}s"
for device in "${DEVICES[@]}"; do
    CO2_PUBLISHER__DEVICE=$device \
    CO2_PUBLISHER__INTERVAL_MS=100 \
    CO2_PUBLISHER__SENSOR__KIND=simulated \
    CO2_PUBLISHER__QUEUE__PATH=$STATE/queue-$device.sqlite3 \
    CO2_PUBLISHER__CLOCK__REQUIRE_SYNC=false \
    CO2_PUBLISHER__MQTT__TOPIC_PREFIX=$PREFIX \
    CO2_PUBLISHER__MQTT__CLIENT_ID=$CLIENT-publisher-$device \
    CO2_PUBLISHER__STATUS__PATH=$STATE/status-$device.json \
    CO2_PUBLISHER__STATUS__INTERVAL_MS=500 \
        setsid "$PUBLISHER" run >"$STATE/publisher-$device.log" 2>&1 &
    echo $! >"$STATE/publisher-$device.pid"
done
# One malformed message, to show where rejects go.
mosquitto_pub -h 127.0.0.1 -q 1 -t "$PREFIX/pi-lab/emissions" -m 'not a reading'

# Sums every series of a metric, whatever its labels (rows_written has route and sink).
metric() {
    curl -sf "http://$HTTP/metrics" | awk -v m="$1" '
        $1 == m || index($1, m "{") == 1 { s += $2; seen = 1 } END { if (seen) print s; else print "?" }'
}
rows() { mariadb -uroot -h127.0.0.1 -N "$DATABASE" -e 'SELECT COUNT(*) FROM co2_emissions'; }
# Readings the broker acknowledged, from the publishers' state files.
published() {
    python3 - "$STATE"/status-*.json <<'PY'
import json, sys
total = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            total += json.load(f)["counters"]["acked"]
    except (OSError, ValueError, KeyError):
        pass
print(total)
PY
}
start_rows=$(rows)
start=$(date +%s)
# The moment the demo is live: the first new row.
for _ in $(seq 1 100); do
    (($(rows) > start_rows)) && break
    sleep 0.1
done
if (($(rows) > start_rows)); then
    echo "    live after $(elapsed): readings are landing (http://$HTTP/ shows them per device)"
else
    echo "    no reading stored yet after $(elapsed): see http://$HTTP/ and $STATE/bridge.log"
fi
printf '    %6s  %10s  %10s  %10s  %8s  %8s\n' secs published rows written rows/s rejects
while (($(date +%s) - start < DEMO_SECONDS)); do
    sleep 2
    secs=$(($(date +%s) - start))
    now_rows=$(rows)
    printf '    %6s  %10s  %10s  %10s  %8s  %8s\n' "$secs" "$(published)" "$now_rows" \
        "$(metric co2_bridge_rows_written_total)" \
        "$(( (now_rows - start_rows) / (secs > 0 ? secs : 1) ))" \
        "$(metric co2_bridge_messages_rejected_total)"
done
for device in "${DEVICES[@]}"; do
    kill -TERM "$(<"$STATE/publisher-$device.pid")" 2>/dev/null || true
done
# The publishers flush their last acknowledgements into their state files at exit.
for device in "${DEVICES[@]}"; do
    pid=$(<"$STATE/publisher-$device.pid")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$STATE/publisher-$device.pid"
done
sent=$(published)
for _ in $(seq 1 50); do
    (($(rows) - start_rows >= sent)) && break
    sleep 0.2
done
stored=$(( $(rows) - start_rows ))
say "Published $sent readings (acknowledged by the broker); $stored are new rows in co2_emissions"
if ((stored == sent)); then
    echo "    every published reading is a row"
else
    echo "    $((sent - stored)) not (yet) stored: see http://$HTTP/ and $STATE/bridge.log"
fi

mariadb -uroot -h127.0.0.1 "$DATABASE" -t -e "
    SELECT device, COUNT(*) AS readings, MAX(date_time) AS last, ROUND(AVG(emissions), 1) AS avg_ppm
      FROM co2_emissions GROUP BY device ORDER BY device;" | sed 's/^/    /'
rejected=$(mariadb -uroot -h127.0.0.1 -N "$DATABASE" -e 'SELECT COUNT(*) FROM rejected_messages')
echo "    $rejected message(s) refused so far (the demo sends one malformed on purpose): kept as dead letters, with the reason, on the status page"

cat <<TXT

The bridge keeps running (pid $(<"$STATE/bridge.pid"), log $STATE/bridge.log):
    status page  http://$HTTP/   (the effective configuration: http://$HTTP/#config)
    publish one  mosquitto_pub -h 127.0.0.1 -q 1 -t $PREFIX/my-pi/emissions -m "\$(date -u '+%F %T')|612.5"
    stop         ops/run-local.sh --stop --state $STATE
TXT
