#!/usr/bin/env bash
# Every metric a dashboard or alert rule uses is one the bridge exports, as
# listed in ops/checks/lib/metric-names.txt (the contract's metric names).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

echo "== metric names in dashboards and rules vs ops/checks/lib/metric-names.txt"
PY="$(check_python)"
run_counted "$PY" "$CHECKS_LIB/metric_names_check.py"
finish
