#!/usr/bin/env bash
# Prometheus provisioning: promtool check config (also checks the rule files and
# the file_sd target file), check rules, test rules (alert unit tests), plus the
# house rules for alerts (ops/checks/lib/rules_lint.py).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT/provisioning/prometheus"

echo "== Prometheus config and alert rules ($(pwd))"
need_cmd promtool prometheus
check "promtool check config prometheus.yml" promtool check config prometheus.yml
for f in rules/*.rules.yml; do
    check "promtool check rules $f" promtool check rules "$f"
done
for f in rules/*.rules.test.yml; do
    check "promtool test rules $f" promtool test rules "$f"
done
PY="$(check_python)"
run_counted "$PY" "$CHECKS_LIB/rules_lint.py"
finish
