#!/usr/bin/env bash
# Runs every InfluxQL query of grafana/dashboards/*.json against a private
# influxd (Debian's influxdb package; free loopback ports, its own data
# directory, never the system service), empty and then seeded with what the
# bridge's InfluxDB sink writes, with Grafana's interpolation of $timeFilter,
# $__interval, $interval, $__interval_ms and the template variables
# (ops/checks/lib/influxql_check.py).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

echo "== dashboard InfluxQL against a private influxd"
need_cmd influxd influxdb
PY="$(check_python)"
run_counted "$PY" "$CHECKS_LIB/influxql_check.py" --influxd "$(command -v influxd)"
finish
