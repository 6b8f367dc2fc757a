#!/usr/bin/env bash
# MySQL accounts from provisioning/mysql (apply.sh + users.sql), for real on
# the local MariaDB with throwaway names: the bridge account can SELECT,
# INSERT, UPDATE (incl. INSERT ... ON DUPLICATE KEY UPDATE) in its database and
# nothing else (no DELETE, DDL, other databases); the Grafana account can only
# SELECT; `_` in the database name is not a wildcard; a re-run changes
# nothing; extra privileges and a drifted password are repaired.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
repo=$(cd -- "$ops/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 53-mysql-grants: provisioning/mysql on the local MariaDB"
client=$(command -v mariadb || command -v mysql || true)
[[ -n $client ]] || { fail "prerequisite mariadb client"; finish; }
admin=("$client")
if [[ -n ${CO2_DB_ADMIN_DEFAULTS_FILE:-} ]]; then admin+=("--defaults-extra-file=$CO2_DB_ADMIN_DEFAULTS_FILE"); fi
"${admin[@]}" -NBe 'SELECT 1' >/dev/null 2>&1 || { fail "admin connection to MariaDB (root over the unix socket)"; finish; }

sfx=$(rand_suffix)
db=co2_t5_$sfx
other=co2_t5o_$sfx
lookalike=co2xt5x$sfx # matches the GRANT pattern co2_t5_<sfx> if `_` were not escaped
bu=t5b_$sfx
gu=t5g_$sfx
work=$(mktemp -d)
cleanup() {
    "${admin[@]}" -e "DROP DATABASE IF EXISTS \`$db\`; DROP DATABASE IF EXISTS \`$other\`; DROP DATABASE IF EXISTS \`$lookalike\`;
        DROP USER IF EXISTS '$bu'@'127.0.0.1'; DROP USER IF EXISTS '$gu'@'127.0.0.1';" 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT
(umask 077 && openssl rand -base64 24 | tr -d '\n' >"$work/bpw" && openssl rand -base64 24 | tr -d '\n' >"$work/gpw")

apply=("$repo/provisioning/mysql/apply.sh" --database "$db" --bridge-user "$bu" --grafana-user "$gu"
    --bridge-password-file "$work/bpw" --grafana-password-file "$work/gpw")

check "apply.sh creates the database and both accounts" "${apply[@]}"
"${apply[@]}" >"$work/second.out" 2>&1
check "a second apply.sh changes nothing" grep -qx "  database changes: 0" "$work/second.out"

# Tables to work on: the schema is the admin's job (co2-bridge migrate); here a stand-in.
"${admin[@]}" -e "
CREATE TABLE \`$db\`.readings (id INT PRIMARY KEY, v INT NOT NULL, n INT NOT NULL DEFAULT 0);
CREATE TABLE \`$db\`.rejected_messages (id INT PRIMARY KEY, reason VARCHAR(64) NOT NULL);
CREATE DATABASE \`$other\`; CREATE TABLE \`$other\`.secret (x INT); INSERT INTO \`$other\`.secret VALUES (42);
CREATE DATABASE \`$lookalike\`; CREATE TABLE \`$lookalike\`.t (x INT); INSERT INTO \`$lookalike\`.t VALUES (1);"

as() { # USER PASSWORD_FILE SQL
    local cnf=$work/$1.cnf
    printf '[client]\nuser=%s\npassword="%s"\nhost=127.0.0.1\nprotocol=tcp\n' "$1" "$(cat "$2")" >"$cnf"
    chmod 0600 "$cnf"
    "$client" --defaults-file="$cnf" -NB -e "$3"
}
B() { as "$bu" "$work/bpw" "$1"; }
G() { as "$gu" "$work/gpw" "$1"; }

check "bridge: INSERT" B "INSERT INTO \`$db\`.readings (id, v) VALUES (1, 10), (2, 20)"
check "bridge: SELECT" test "$(B "SELECT COUNT(*) FROM \`$db\`.readings")" == 2
check "bridge: UPDATE" B "UPDATE \`$db\`.readings SET v = 11 WHERE id = 1"
check "bridge: INSERT ... ON DUPLICATE KEY UPDATE (needs UPDATE)" \
    B "INSERT INTO \`$db\`.readings (id, v) VALUES (1, 99) ON DUPLICATE KEY UPDATE n = n + 1"
check "... and it counted the duplicate without touching the value" test "$(B "SELECT CONCAT(v, '/', n) FROM \`$db\`.readings WHERE id = 1")" == "11/1"
check_not "bridge: DELETE is denied" B "DELETE FROM \`$db\`.readings WHERE id = 2"
check_not "bridge: no DELETE on rejected_messages before the migrations made the table and apply.sh ran again" \
    B "DELETE FROM \`$db\`.rejected_messages WHERE id = 0"
"${apply[@]}" >"$work/after-tables.out" 2>&1
check "apply.sh after the migrations grants the table" grep -qx "  database changes: 1" "$work/after-tables.out"
check "bridge: DELETE on rejected_messages (dead-letter retention)" B "DELETE FROM \`$db\`.rejected_messages WHERE id = 0"
check_not "bridge: still no DELETE on another table" B "DELETE FROM \`$db\`.readings WHERE id = 2"
check_not "bridge: DROP TABLE is denied" B "DROP TABLE \`$db\`.readings"
check_not "bridge: CREATE TABLE is denied" B "CREATE TABLE \`$db\`.evil (x INT)"
check_not "bridge: ALTER TABLE is denied" B "ALTER TABLE \`$db\`.readings ADD COLUMN evil INT"
check_not "bridge: TRUNCATE is denied" B "TRUNCATE TABLE \`$db\`.readings"
check_not "bridge: DROP DATABASE is denied" B "DROP DATABASE \`$db\`"
check_not "bridge: CREATE DATABASE is denied" B "CREATE DATABASE \`${db}_evil\`"
check_not "bridge: reading another database is denied" B "SELECT * FROM \`$other\`.secret"
check_not "bridge: writing another database is denied" B "INSERT INTO \`$other\`.secret VALUES (1)"
check_not "bridge: a look-alike database name is not covered by its grant (_ escaped)" B "SELECT * FROM \`$lookalike\`.t"
check_not "bridge: mysql.user is denied" B "SELECT COUNT(*) FROM mysql.user"
check "bridge: sees only its own database" test "$(B "SHOW DATABASES" | grep -v '^information_schema$' | tr '\n' ' ')" == "$db "

check "grafana: SELECT" test "$(G "SELECT COUNT(*) FROM \`$db\`.readings")" == 2
check_not "grafana: INSERT is denied" G "INSERT INTO \`$db\`.readings (id, v) VALUES (3, 30)"
check_not "grafana: UPDATE is denied" G "UPDATE \`$db\`.readings SET v = 0"
check_not "grafana: DELETE is denied" G "DELETE FROM \`$db\`.readings"
check_not "grafana: DROP TABLE is denied" G "DROP TABLE \`$db\`.readings"
check_not "grafana: CREATE TABLE is denied" G "CREATE TABLE \`$db\`.evil (x INT)"
check_not "grafana: reading another database is denied" G "SELECT * FROM \`$other\`.secret"

grants() { "${admin[@]}" -NBe "SHOW GRANTS FOR '$1'@'127.0.0.1'" | grep -v 'GRANT USAGE ON \*\.\*' | sed 's/`//g' | sort; }
want_b="GRANT DELETE ON $db.rejected_messages TO $bu@127.0.0.1
GRANT SELECT, INSERT, UPDATE ON ${db//_/\\\\_}.* TO $bu@127.0.0.1"
check "SHOW GRANTS for the bridge: exactly SELECT, INSERT, UPDATE on its database, DELETE on rejected_messages" test "$(grants "$bu")" == "$want_b"
check "SHOW GRANTS for grafana: exactly SELECT on the database" test "$(grants "$gu")" == "GRANT SELECT ON ${db//_/\\\\_}.* TO $gu@127.0.0.1"

# Drift: a hand-made setup gave the bridge too much, and a password changed.
"${admin[@]}" -e "GRANT ALL PRIVILEGES ON \`$db\`.* TO '$bu'@'127.0.0.1';
    GRANT SELECT ON \`$other\`.* TO '$bu'@'127.0.0.1'; GRANT PROCESS ON *.* TO '$gu'@'127.0.0.1';
    GRANT DELETE ON \`$db\`.readings TO '$gu'@'127.0.0.1';
    ALTER USER '$gu'@'127.0.0.1' IDENTIFIED BY 'drifted-password'"
"${apply[@]}" --dry-run >"$work/dry.out" 2>&1
check "apply.sh --dry-run lists the REVOKEs it would run" grep -q "would   REVOKE PROCESS ON \*\.\* FROM '$gu'@'127.0.0.1'" "$work/dry.out"
check "apply.sh --dry-run changes nothing" test "$(grants "$gu" | grep -c PROCESS)" == 1
check "apply.sh repairs the drift" "${apply[@]}"
check "after repair the bridge has exactly its grants again" test "$(grants "$bu")" == "$want_b"
check "after repair grafana has exactly SELECT again" test "$(grants "$gu")" == "GRANT SELECT ON ${db//_/\\\\_}.* TO $gu@127.0.0.1"
check "after repair grafana logs in with the password from its file" G "SELECT 1"
check_not "after repair the bridge cannot DROP again" B "DROP TABLE \`$db\`.readings"
"${apply[@]}" >"$work/third.out" 2>&1
check "and a re-run changes nothing" grep -qx "  database changes: 0" "$work/third.out"
check_not "apply.sh refuses a database name with a quote" "$repo/provisioning/mysql/apply.sh" --database "x\`y" \
    --bridge-password-file "$work/bpw" --grafana-password-file "$work/gpw" --dry-run

finish
