#!/usr/bin/env bash
# Validates grafana/dashboards/*.json and provisioning/grafana/*.yml without a
# Grafana server (no registry reachable here ships a runnable Grafana, and no
# package ships a JSON Schema for dashboards): JSON Schemas generated from
# @grafana/schema's TypeScript types + the foundation SDK's Prometheus query type,
# checked with python jsonschema, plus the provisioning rules Grafana enforces.
# npm packages and the venv live under ${XDG_CACHE_HOME:-~/.cache}/co2-telemetry.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

# Pinned together: schema 12.3.3 matches the grafana/grafana:12.3.3 image in docker-compose.yml.
GRAFANA_SCHEMA=12.3.3
TSJSG=2.4.0
FOUNDATION_SDK=11.6.0-cogv0.0.x.1769699379
NPM_DIR="$CACHE_DIR/grafana-schema-$GRAFANA_SCHEMA"

echo "== Grafana dashboards and provisioning (schema @grafana/schema@$GRAFANA_SCHEMA)"
need_cmd node nodejs
need_cmd npm npm
if [[ ! -f "$NPM_DIR/node_modules/@grafana/schema/package.json" || ! -f "$NPM_DIR/.installed" ]]; then
    mkdir -p "$NPM_DIR"
    (cd "$NPM_DIR" && [[ -f package.json ]] || echo '{"name":"co2-grafana-schema-check","private":true}' > package.json)
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error \
        "@grafana/schema@$GRAFANA_SCHEMA" "ts-json-schema-generator@$TSJSG" \
        "@grafana/grafana-foundation-sdk@$FOUNDATION_SDK" >/dev/null)
    touch "$NPM_DIR/.installed"
fi
PY="$(check_python)"
run_counted "$PY" "$CHECKS_LIB/dashboard_check.py" --node-modules "$NPM_DIR/node_modules" \
    --schema-cache "$NPM_DIR/schemas"
finish
