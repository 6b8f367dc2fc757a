#!/usr/bin/env bash
# docker-compose.yml, .env.example, Dockerfile, .dockerignore without a Docker
# engine: `docker-compose config -q` (Debian docker-compose 1.29) with a filled
# copy of .env.example, the same with the unfilled example (must refuse), then
# the house rules and dry runs of the inlined setup scripts against the local
# Mosquitto binary and MariaDB (ops/checks/lib/compose_check.py).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

echo "== docker-compose stack"
need_cmd docker-compose docker-compose
need_cmd mosquitto mosquitto
need_cmd mosquitto_sub mosquitto-clients
need_cmd openssl openssl
need_cmd amtool prometheus-alertmanager
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# A filled copy of .env.example: every empty secret gets a throwaway value.
sed -E 's/^([A-Z0-9_]*(PASSWORD|SECRET|TOKEN)[A-Z0-9_]*)=$/\1=testvalue'"$RANDOM"'x/' .env.example >"$TMP/env"

check "docker-compose config -q (filled .env.example)" \
    docker-compose --env-file "$TMP/env" -f docker-compose.yml config -q
check "docker-compose refuses the unfilled .env.example (no default secrets)" \
    bash -c '! docker-compose --env-file .env.example -f docker-compose.yml config -q 2>/dev/null'
docker-compose --env-file "$TMP/env" -f docker-compose.yml config >"$TMP/resolved.yml"

PY="$(check_python)"
run_counted "$PY" "$CHECKS_LIB/compose_check.py" --config "$TMP/resolved.yml" --env-file "$TMP/env"
finish
