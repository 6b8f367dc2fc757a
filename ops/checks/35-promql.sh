#!/usr/bin/env bash
# Every PromQL expression of the dashboards and alert rules runs on a real
# Prometheus: a private server on a free 127.0.0.1 port over a temporary TSDB
# filled with synthetic series of every listed metric (promtool tsdb
# create-blocks-from openmetrics). Dashboard queries must also return data.
# Against a running Prometheus instead: lib/promql_check.py --url URL.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

echo "== PromQL of dashboards and rules on a real Prometheus"
need_cmd prometheus prometheus
need_cmd promtool prometheus
PY="$(check_python)"
run_counted "$PY" "$CHECKS_LIB/promql_check.py" --start --require-data
finish
