#!/usr/bin/env bash
# Runs every MySQL query of grafana/dashboards/*.json against the local MariaDB
# (127.0.0.1:3306, root) in a throwaway database holding the bridge's schema,
# with Grafana's macros and $device expanded (ops/checks/lib/sql_check.py).
# The schema comes from `co2-bridge migrate` when the bridge has that command,
# otherwise from bridge/migrations/*.sql applied directly. With the bridge, the
# rollup tiers are rebuilt from the seeded rows and every panel is compared
# with its raw-only query for each tier (ops/checks/lib/tier_check.py). The
# database is dropped at the end.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306
DB="co2_obs_sql_$$_$RANDOM"
PY="$(check_python)"

mysql_root() { mysql --protocol=TCP -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u root "$@"; }
cleanup() { mysql_root -e "DROP DATABASE IF EXISTS \`$DB\`" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== dashboard SQL against MariaDB $MYSQL_HOST:$MYSQL_PORT, database $DB"
check "MariaDB reachable as root" mysql_root -e "SELECT 1"
mysql_root -e "CREATE DATABASE \`$DB\`"

MIGRATE_ARGS=()
if cargo build -q -p co2-bridge >/dev/null 2>&1 && "${CO2_BRIDGE_BIN:-target/debug/co2-bridge}" --help 2>/dev/null | grep -qw migrate; then
    check "schema by co2-bridge migrate" env CO2_BRIDGE__DATABASE__URL="mysql://root@$MYSQL_HOST:$MYSQL_PORT/$DB" \
        cargo run -q -p co2-bridge -- migrate
    MIGRATE_ARGS=(--bridge "${CO2_BRIDGE_BIN:-target/debug/co2-bridge}")
else
    echo "note: co2-bridge has no migrate command yet; applying bridge/migrations/*.sql directly"
    MIGRATE_ARGS=(--apply-migrations bridge/migrations)
fi

run_counted "$PY" "$CHECKS_LIB/sql_check.py" --host "$MYSQL_HOST" --port "$MYSQL_PORT" --user root \
    --database "$DB" "${MIGRATE_ARGS[@]}"

cleanup
check "throwaway database dropped" bash -c "! mysql --protocol=TCP -h $MYSQL_HOST -P $MYSQL_PORT -u root -N -e 'SHOW DATABASES' | grep -qx '$DB'"
finish
