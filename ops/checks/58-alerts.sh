#!/usr/bin/env bash
# Alerts reach a person, end to end on loopback with the real programs: a
# co2-bridge (built by ops/test.sh; its own database, topic prefix and port),
# a real Prometheus with the repository's config and rules, a real
# Alertmanager configured by provisioning/alertmanager/render.sh, a webhook
# receiver and an SMTP server with STARTTLS (ops/checks/lib/alerts_e2e.py says
# what is checked, and which two thresholds are shortened).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

echo "== alerts: bridge -> Prometheus -> Alertmanager -> webhook and e-mail"
need_cmd promtool prometheus
need_cmd prometheus-alertmanager prometheus-alertmanager
need_cmd amtool prometheus-alertmanager
need_cmd aiosmtpd python3-aiosmtpd
need_cmd mosquitto_pub mosquitto-clients
need_cmd openssl openssl
BRIDGE=${CO2_BRIDGE_BIN:-target/debug/co2-bridge}
[[ -x $BRIDGE ]] || { echo "FAIL - $BRIDGE is missing: run cargo build -p co2-bridge"; echo "0 passed, 1 failed"; exit 1; }

db="co2chk_alerts_$$"
prefix="chkalerts$$"
port=$(free_port)
work=$(mktemp -d)
bridge_pid=
cleanup() {
    if [[ -n $bridge_pid ]] && kill -TERM "$bridge_pid" 2>/dev/null; then
        for _ in $(seq 1 100); do kill -0 "$bridge_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`" || true
    rm -rf "$work"
}
trap cleanup EXIT

mariadb -uroot -h127.0.0.1 -e "CREATE DATABASE \`$db\`"
CO2_BRIDGE__DATABASE__URL="mysql://root@127.0.0.1:3306/$db" \
CO2_BRIDGE__MQTT__CLIENT_ID="$prefix-bridge" \
CO2_BRIDGE__MQTT__TOPICS="$prefix/+/emissions" \
CO2_BRIDGE__HTTP__LISTEN="127.0.0.1:$port" \
    "$BRIDGE" run >"$work/bridge.log" 2>&1 &
bridge_pid=$!
# The check kills it on purpose: no "Killed" job notice from bash.
disown "$bridge_pid"
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
done
check "bridge is ready" curl -sf "http://127.0.0.1:$port/readyz"

# Debian's python3: python3-aiosmtpd is installed for it.
run_counted /usr/bin/python3 "$CHECKS_LIB/alerts_e2e.py" --bridge-port "$port" --bridge-pid "$bridge_pid" \
    --topic-prefix "$prefix" --work "$work"
if ((FAILED)); then
    echo "--- bridge log"
    tail -20 "$work/bridge.log"
fi
finish
