#!/usr/bin/env bash
# Grafana for co2-telemetry, kept apart from install-server.sh because it is
# the one piece that comes from outside the distribution: Grafana's official
# APT repository. Called by install-server.sh; runnable alone.
#
# Usage: sudo ops/install-grafana.sh [options]
#   --db-name NAME --db-user NAME --db-port PORT   the SELECT-only MySQL account
#   --db-password-file F       its password (default /etc/co2-telemetry/secrets/grafana-db-password)
#   --admin-password-file F    Grafana's admin password (default .../grafana-admin-password)
#   --root DIR                 write files under DIR; no repository, package or service
#   --dry-run                  print the plan
#
# What it does:
#   1. adds the repository (signed-by a keyring in /etc/apt/keyrings) and
#      installs the `grafana` package;
#   2. writes /etc/co2-telemetry/secrets/grafana.env (0600 root: the admin
#      password and the MySQL account, read by systemd, not by Grafana's user)
#      and a grafana-server drop-in that loads it, so there is no admin/admin;
#   3. provisions the data sources (this host's MySQL and Prometheus) and the
#      dashboards from this repository.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

db_name=co2
db_user=co2_grafana
db_port=3306
db_pw_file=/etc/co2-telemetry/secrets/grafana-db-password
admin_pw_file=/etc/co2-telemetry/secrets/grafana-admin-password
while [[ $# -gt 0 ]]; do
    case $1 in
        --db-name) db_name=${2:?}; shift 2 ;;
        --db-user) db_user=${2:?}; shift 2 ;;
        --db-port) db_port=${2:?}; shift 2 ;;
        --db-password-file) db_pw_file=${2:?}; shift 2 ;;
        --admin-password-file) admin_pw_file=${2:?}; shift 2 ;;
        --root) ROOT=${2:?}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
if [[ $DRY_RUN == 0 && $ROOT == / ]] && ! is_root; then
    die "run as root: sudo $0"
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
r() { rootpath "$1"; }
changed=0

step "Grafana"
# 1. Repository and package (cannot be exercised offline; kept minimal).
keyring=/etc/apt/keyrings/grafana.gpg
list=/etc/apt/sources.list.d/grafana.list
if [[ $ROOT != / ]]; then
    skip "Grafana repository and package (--root)"
elif [[ $(dpkg-query -W -f='${Status}' grafana 2>/dev/null || true) == "install ok installed" ]]; then
    ok "grafana package installed"
else
    change "add Grafana's APT repository ($list, key $keyring) and install grafana"
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl gpg
    run install -d -m 0755 /etc/apt/keyrings
    if [[ $DRY_RUN == 1 ]]; then
        info "          + curl -fsSL https://apt.grafana.com/gpg.key | gpg --dearmor -o $keyring"
        info "          + echo 'deb [signed-by=$keyring] https://apt.grafana.com stable main' > $list"
    else
        curl -fsSL https://apt.grafana.com/gpg.key | gpg --batch --yes --dearmor -o "$keyring"
        chmod 0644 "$keyring"
        echo "deb [signed-by=$keyring] https://apt.grafana.com stable main" >"$list"
    fi
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y grafana
    changed=1
fi

# 2. Secrets for grafana-server, as an environment file only root reads.
env_file=/etc/co2-telemetry/secrets/grafana.env
if [[ -s $(r "$db_pw_file") && -s $(r "$admin_pw_file") ]]; then
    (
        umask 077
        printf '# Made by ops/install-grafana.sh from %s and %s; do not edit.\n' "$db_pw_file" "$admin_pw_file"
        printf 'GRAFANA_MYSQL_USER=%s\n' "$db_user"
        printf 'GRAFANA_MYSQL_PASSWORD=%s\n' "$(head -n 1 -- "$(r "$db_pw_file")")"
        # Applies when Grafana creates its admin user (first start). For an
        # existing Grafana see ops/README.md, "Rotating passwords".
        printf 'GF_SECURITY_ADMIN_PASSWORD=%s\n' "$(head -n 1 -- "$(r "$admin_pw_file")")"
        printf 'GF_USERS_ALLOW_SIGN_UP=false\n'
        printf 'GF_AUTH_ANONYMOUS_ENABLED=false\n'
    ) >"$tmp/grafana.env"
    if [[ -f $(r "$env_file") ]] && cmp -s "$tmp/grafana.env" "$(r "$env_file")"; then
        ok "$env_file up to date (not shown)"
    else
        change "write $env_file (0600 root; not shown)"
        [[ $DRY_RUN == 1 ]] || install -D -m 0600 -o root -g root "$tmp/grafana.env" "$(r "$env_file")"
        changed=1
    fi
else
    change "write $env_file from the generated passwords (0600 root)"
fi
printf '[Service]\n# co2-telemetry: admin password and MySQL account (0600 root, read by systemd).\nEnvironmentFile=%s\n' \
    "$env_file" >"$tmp/dropin.conf"
ensure_file "$tmp/dropin.conf" "$(r /etc/systemd/system/grafana-server.service.d/co2-telemetry.conf)" root root 0644 && changed=1

# 3. Provisioning: the repository's files, pointed at this host's services.
src=$repo/provisioning/grafana/datasources/datasources.yml
sed -e "s|url: mysql:3306|url: 127.0.0.1:$db_port|" \
    -e "s|url: http://prometheus:9090|url: http://127.0.0.1:9090|" \
    -e "s|^\([[:space:]]*database:\) co2[[:space:]]*$|\1 $db_name|" \
    "$src" >"$tmp/datasources.yml"
if grep -qE 'url: (mysql|prometheus)[:/]' "$tmp/datasources.yml"; then
    die "$src names a compose host this script does not rewrite; update ops/install-grafana.sh"
fi
ensure_dir "$(r /etc/grafana/provisioning/datasources)" root root 0755
ensure_file "$tmp/datasources.yml" "$(r /etc/grafana/provisioning/datasources/co2-telemetry.yml)" root root 0644 && changed=1
ensure_dir "$(r /etc/grafana/provisioning/dashboards)" root root 0755
ensure_file "$repo/provisioning/grafana/dashboards/dashboards.yml" \
    "$(r /etc/grafana/provisioning/dashboards/co2-telemetry.yml)" root root 0644 && changed=1
ensure_dir "$(r /etc/grafana/dashboards)" root root 0755
for f in "$repo"/grafana/dashboards/*.json; do
    [[ -e $f ]] || continue
    ensure_file "$f" "$(r "/etc/grafana/dashboards/${f##*/}")" root root 0644 || true
done

if [[ $ROOT != / ]]; then
    skip "grafana-server restart (--root)"
elif ! have_systemd; then
    skip "grafana-server: systemd is not running here (PID 1 is '$(pid1_name)'); run: systemctl daemon-reload; systemctl enable --now grafana-server"
elif [[ $changed == 1 ]]; then
    run systemctl daemon-reload
    run systemctl enable grafana-server
    run systemctl restart grafana-server
fi
info "  grafana changes: $CHANGES"
