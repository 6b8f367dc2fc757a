#!/usr/bin/env bash
# Create the co2-telemetry database and its two runtime accounts, and bring
# their grants to exactly what provisioning/mysql/users.sql says:
#   bridge : SELECT, INSERT, UPDATE on the database; grafana: SELECT.
# Idempotent: a re-run with the same inputs changes nothing (an existing
# password is only reset when logging in with the given one fails).
# Passwords are read from files and reach the server on stdin only.
#
# Usage: provisioning/mysql/apply.sh [options]
#   --database NAME              database (default co2; [A-Za-z0-9_]{1,64})
#   --bridge-user NAME           default co2_bridge
#   --grafana-user NAME          default co2_grafana
#   --user-host HOST             host part of both accounts (default 127.0.0.1,
#                                where the bridge and Grafana connect from)
#   --bridge-password-file F     required
#   --grafana-password-file F    required
#   --admin-defaults-file F      my.cnf-style file for the admin connection
#                                (default: the client's defaults, i.e. root over
#                                the unix socket on Debian/Ubuntu)
#   --login-host H --login-port P  where to test the runtime accounts' passwords
#                                (default 127.0.0.1:3306)
#   --dry-run                    print the plan, change nothing
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

database=co2
bridge_user=co2_bridge
grafana_user=co2_grafana
user_host=127.0.0.1
bridge_pw_file=
grafana_pw_file=
admin_defaults=${CO2_DB_ADMIN_DEFAULTS_FILE:-}
login_host=127.0.0.1
login_port=3306
dry_run=0

die() { printf 'apply.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --database) database=${2:?}; shift 2 ;;
        --bridge-user) bridge_user=${2:?}; shift 2 ;;
        --grafana-user) grafana_user=${2:?}; shift 2 ;;
        --user-host) user_host=${2:?}; shift 2 ;;
        --bridge-password-file) bridge_pw_file=${2:?}; shift 2 ;;
        --grafana-password-file) grafana_pw_file=${2:?}; shift 2 ;;
        --admin-defaults-file) admin_defaults=${2:?}; shift 2 ;;
        --login-host) login_host=${2:?}; shift 2 ;;
        --login-port) login_port=${2:?}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ $database =~ ^[A-Za-z0-9_]{1,64}$ ]] || die "--database '$database': use 1-64 of [A-Za-z0-9_]"
for u in "$bridge_user" "$grafana_user"; do
    [[ $u =~ ^[A-Za-z0-9_]{1,32}$ ]] || die "user name '$u': use 1-32 of [A-Za-z0-9_]"
done
[[ $bridge_user != "$grafana_user" ]] || die "the bridge and Grafana need two different accounts"
[[ $user_host =~ ^[A-Za-z0-9.%_:-]{1,255}$ ]] || die "--user-host '$user_host' is not a host name, IP or pattern"
for f in "$bridge_pw_file" "$grafana_pw_file"; do
    [[ -n $f ]] || die "--bridge-password-file and --grafana-password-file are required"
    [[ -s $f ]] || die "password file $f is missing or empty (the installer generates it)"
done

client=$(command -v mariadb || command -v mysql || true)
[[ -n $client ]] || die "no mariadb/mysql client found: apt-get install mariadb-client"
admin=("$client")
[[ -z $admin_defaults ]] || admin=("$client" "--defaults-extra-file=$admin_defaults")

tmpdir=$(mktemp -d)
trap 'rm -rf -- "$tmpdir"' EXIT
chmod 0700 "$tmpdir"

# A SQL string literal that needs no escaping under any sql_mode.
hexlit() {
    local hex
    hex=$(od -An -v -tx1 | tr -d ' \n')
    if [[ -z $hex ]]; then printf "''"; else printf "CONVERT(X'%s' USING utf8mb4)" "$hex"; fi
}
pw_bridge=$(head -n 1 -- "$bridge_pw_file" | tr -d '\r\n' | hexlit)
pw_grafana=$(head -n 1 -- "$grafana_pw_file" | tr -d '\r\n' | hexlit)

# Does USER log in with the password in FILE? (then it is left alone)
login_ok() {
    local user=$1 file=$2 cnf=$tmpdir/login.cnf
    case $user_host in 127.0.0.1 | localhost | % | ::1) ;; *) return 1 ;; esac
    {
        printf '[client]\nuser=%s\nhost=%s\nport=%s\nprotocol=tcp\n' "$user" "$login_host" "$login_port"
        printf 'password="%s"\n' "$(head -n 1 -- "$file" | tr -d '\r\n' | sed 's/[\\"]/\\&/g')"
    } >"$cnf"
    "$client" --defaults-file="$cnf" --connect-timeout=5 -NBe 'SELECT 1' >/dev/null 2>&1
}

vars=$tmpdir/vars.sql
{
    printf 'SET @co2_db = %s;\n' "$(printf '%s' "$database" | hexlit)"
    printf 'SET @bridge_user = %s, @bridge_host = %s;\n' \
        "$(printf '%s' "$bridge_user" | hexlit)" "$(printf '%s' "$user_host" | hexlit)"
    printf 'SET @grafana_user = %s, @grafana_host = %s;\n' \
        "$(printf '%s' "$grafana_user" | hexlit)" "$(printf '%s' "$user_host" | hexlit)"
} >"$vars"

"${admin[@]}" -NBe 'SELECT 1' >/dev/null 2>"$tmpdir/err" ||
    die "cannot connect as the admin account: $(head -c 300 "$tmpdir/err"). Run this as root on the database host (unix-socket root), or pass --admin-defaults-file FILE"

account_exists() {
    local n
    n=$("${admin[@]}" -NB <<EOF
$(cat "$vars")
SELECT COUNT(*) FROM mysql.user WHERE User = $(printf '%s' "$1" | hexlit) AND Host = @bridge_host;
EOF
)
    [[ $n == 1 ]]
}

db_exists=$("${admin[@]}" -NB <<EOF
$(cat "$vars")
SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = @co2_db;
EOF
)
changes=0
say_change() { printf '  %-7s %s\n' "$([[ $dry_run == 1 ]] && echo would || echo change)" "$*"; }
if [[ $db_exists == 1 ]]; then
    echo "  ok      database $database exists"
else
    say_change "create database $database (utf8mb4)"
    changes=$((changes + 1))
fi

declare -A set_pw
for role in bridge grafana; do
    if [[ $role == bridge ]]; then u=$bridge_user f=$bridge_pw_file; else u=$grafana_user f=$grafana_pw_file; fi
    set_pw[$role]=0
    if ! account_exists "$u"; then
        say_change "create account '$u'@'$user_host' (password from $f)"
        changes=$((changes + 1))
    elif login_ok "$u" "$f"; then
        echo "  ok      account '$u'@'$user_host' exists and its password matches $f"
    else
        say_change "reset the password of '$u'@'$user_host' to the one in $f"
        set_pw[$role]=1
        changes=$((changes + 1))
    fi
done

grants_of() {
    "${admin[@]}" -NB -e "SHOW GRANTS FOR '$1'@'$user_host'" 2>/dev/null | sort || true
}
before_grants=$(grants_of "$bridge_user"; grants_of "$grafana_user")

if [[ $dry_run == 1 ]]; then
    echo "          + ${client##*/} < provisioning/mysql/users.sql  (GRANT SELECT, INSERT, UPDATE to $bridge_user; SELECT to $grafana_user)"
else
    {
        cat "$vars"
        printf 'SET @bridge_password = %s, @bridge_set_password = %s;\n' "$pw_bridge" "${set_pw[bridge]}"
        printf 'SET @grafana_password = %s, @grafana_set_password = %s;\n' "$pw_grafana" "${set_pw[grafana]}"
        cat "$here/users.sql"
    } >"$tmpdir/apply.sql"
    "${admin[@]}" <"$tmpdir/apply.sql" || die "applying users.sql failed (see the server's message above)"
fi

revokes=$({ cat "$vars"; cat "$here/excess-grants.sql"; } | "${admin[@]}" -NB)
if [[ -n $revokes ]]; then
    while IFS= read -r stmt; do
        say_change "$stmt  (more than the pipeline needs)"
        changes=$((changes + 1))
    done <<<"$revokes"
    [[ $dry_run == 1 ]] || "${admin[@]}" <<<"$revokes" || die "revoking excess privileges failed"
fi

after_grants=$(grants_of "$bridge_user"; grants_of "$grafana_user")
if [[ $dry_run == 0 && $before_grants != "$after_grants" && $changes == 0 ]]; then
    say_change "grants of $bridge_user/$grafana_user"
    changes=$((changes + 1))
elif [[ -z $revokes && $before_grants == "$after_grants" && -n $before_grants ]]; then
    echo "  ok      grants: $bridge_user SELECT, INSERT, UPDATE; $grafana_user SELECT (on $database only)"
fi
echo "  database changes: $changes"
