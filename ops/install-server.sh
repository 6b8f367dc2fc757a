#!/usr/bin/env bash
# Install or upgrade the co2-telemetry server side on a Debian/Ubuntu VM:
# Mosquitto (authenticated, ACL, TLS), MariaDB (database, DML-only bridge
# account, SELECT-only Grafana account), Prometheus, Alertmanager (alerts by
# mail, webhook or ntfy, as /etc/co2-telemetry/alerts.env says), Grafana,
# and the co2-bridge service. Idempotent: a second run reports "changes: 0".
#
# Usage: sudo ops/install-server.sh [options]
#   --dry-run               print the plan (every change and command), change nothing
#   --bridge-bin PATH       the co2-bridge binary (default: target/release/co2-bridge
#                           of this checkout; build it with `cargo build --release -p co2-bridge`)
#   --tls-san NAME          a name the devices use for this server, repeatable
#                           (DNS:mqtt.example.org, IP:203.0.113.7); see ops/make-certs.sh
#   --no-tls                no 8883 listener (then devices need --mqtt-bind, on a private network only)
#   --mqtt-port PORT        plain MQTT port for devices and local tools (default 1883)
#   --mqtt-bind ADDR        its bind address (default 127.0.0.1; "0.0.0.0" or "" = all)
#   --mqtts-port PORT       MQTT over TLS port for devices (default 8883, all interfaces)
#   --bridge-port PORT      the bridge's own listener, always on 127.0.0.1 (default 1884)
#   --device-listen ADDR    turn on the bridge's device listener (HTTP ingest, /images)
#                           at ADDR, e.g. 127.0.0.1:9465 behind a TLS reverse proxy (default off)
#   --mqtt-user NAME        the bridge's broker user (default co2-bridge)
#   --routes FILE           [[routes]] for the bridge (e.g. bridge/routes.example.toml),
#                           kept as /etc/co2-bridge/routes.toml and appended to
#                           bridge.toml; without it an installed routes.toml is kept
#   --no-routes             remove /etc/co2-bridge/routes.toml (only the CO2 route)
#   --credential NAME=FILE  install FILE as the secret NAME (0600 root), for a route
#                           whose config reads /run/credentials/co2-bridge.service/NAME
#                           (e.g. an http.tokens_file); repeatable
#   --db-name NAME          database (default co2)
#   --db-bridge-user NAME   default co2_bridge;  --db-grafana-user NAME  default co2_grafana
#   --db-user-host HOST     host part of both accounts (default 127.0.0.1)
#   --db-port PORT          default 3306
#   --db-admin-defaults F   my.cnf-style file for the admin connection (default:
#                           root over the unix socket)
#   --db-admin-url-file F   file with the mysql:// URL `co2-bridge migrate` uses
#                           (default: root over the unix socket)
#   --no-grafana            do not install Grafana (ops/install-grafana.sh)
#   --no-migrate            do not run `co2-bridge migrate`
#   --only STEPS / --skip STEPS   comma list of: packages,grafana,secrets,database,
#                           mosquitto,tls,bridge,prometheus,alertmanager,services
#   --root DIR              install files under DIR instead of / (tests): no
#                           packages, no services; the Mosquitto drop-ins name
#                           their files under DIR so they run in place; the
#                           database steps still talk to the configured server
#                           (use test names)
# Environment: CO2_DB_ADMIN_DEFAULTS_FILE (same as --db-admin-defaults).
#
# Secrets are generated when absent into /etc/co2-telemetry/secrets/ (0700,
# files 0600 root) and reach the services as systemd credentials; they are
# never printed. A route's own secret (a tokens file) lives there too: the
# route names it as /run/credentials/co2-bridge.service/NAME, and the
# installer loads /etc/co2-telemetry/secrets/NAME under that name
# (LoadCredential= in a drop-in), since the service's dynamic user cannot read
# the root-only original.
#
# The broker's ACL is derived from the bridge's config (`co2-bridge acl`):
# each device may publish on every route's topics under its own name; topics
# without a device level are granted per device by ops/add-device.sh
# --shared-topic.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

bridge_bin=$repo/target/release/co2-bridge
tls=1
tls_sans=()
mqtt_port=1883
mqtt_bind=127.0.0.1
mqtts_port=8883
bridge_port=1884
mqtt_user=co2-bridge
routes_file=
no_routes=0
declare -A credentials=()
db_name=co2
db_bridge_user=co2_bridge
db_grafana_user=co2_grafana
db_user_host=127.0.0.1
db_port=3306
db_admin_defaults=${CO2_DB_ADMIN_DEFAULTS_FILE:-}
db_admin_url_file=
grafana=1
migrate=1
db_apply_args=()
device_listen=
all_steps=packages,grafana,secrets,database,mosquitto,tls,bridge,prometheus,alertmanager,services
only=$all_steps
skip_steps=
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY_RUN=1; shift ;;
        --bridge-bin) bridge_bin=${2:?}; shift 2 ;;
        --tls-san) tls_sans+=("${2:?}"); shift 2 ;;
        --no-tls) tls=0; shift ;;
        --mqtt-port) mqtt_port=${2:?}; shift 2 ;;
        --mqtt-bind) mqtt_bind=${2?}; shift 2 ;;
        --mqtts-port) mqtts_port=${2:?}; shift 2 ;;
        --bridge-port) bridge_port=${2:?}; shift 2 ;;
        --device-listen) device_listen=${2:?}; shift 2 ;;
        --routes) routes_file=${2:?}; shift 2 ;;
        --no-routes) no_routes=1; shift ;;
        --credential)
            [[ ${2:-} == *=* ]] || die "--credential wants NAME=FILE"
            credentials[${2%%=*}]=${2#*=}
            shift 2
            ;;
        --mqtt-user) mqtt_user=${2:?}; shift 2 ;;
        --db-name) db_name=${2:?}; shift 2 ;;
        --db-bridge-user) db_bridge_user=${2:?}; shift 2 ;;
        --db-grafana-user) db_grafana_user=${2:?}; shift 2 ;;
        --db-user-host) db_user_host=${2:?}; shift 2 ;;
        --db-port) db_port=${2:?}; shift 2 ;;
        --db-admin-defaults) db_admin_defaults=${2:?}; shift 2 ;;
        --db-admin-url-file) db_admin_url_file=${2:?}; shift 2 ;;
        --no-grafana) grafana=0; shift ;;
        --no-migrate) migrate=0; shift ;;
        --only) only=${2:?}; shift 2 ;;
        --skip) skip_steps=${2:?}; shift 2 ;;
        --root) ROOT=${2:?}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

for s in $(split_list "$only") $(split_list "$skip_steps"); do
    [[ ,$all_steps, == *,"$s",* ]] || die "unknown step '$s' (steps: $all_steps)"
done
want() { [[ ,$only, == *,"$1",* && ,$skip_steps, != *,"$1",* ]]; }
[[ $grafana == 1 ]] || skip_steps+=,grafana

valid_port "$mqtt_port" || die "--mqtt-port '$mqtt_port' is not a TCP port"
valid_port "$mqtts_port" || die "--mqtts-port '$mqtts_port' is not a TCP port"
valid_port "$bridge_port" || die "--bridge-port '$bridge_port' is not a TCP port"
valid_port "$db_port" || die "--db-port '$db_port' is not a TCP port"
[[ $mqtt_port != "$mqtts_port" && $bridge_port != "$mqtt_port" && $bridge_port != "$mqtts_port" ]] ||
    die "--mqtt-port, --mqtts-port and --bridge-port must all differ"
[[ -z $routes_file || $no_routes == 0 ]] || die "--routes and --no-routes exclude each other"
[[ -z $routes_file || -r $routes_file ]] || die "--routes $routes_file: no such readable file"
for c in "${!credentials[@]}"; do
    valid_credential_name "$c" || die "--credential '$c': use 1-64 of [A-Za-z0-9_.-], not starting with '.'"
    [[ $c != db-password && $c != mqtt-password ]] || die "--credential '$c' is the unit's own; pick another name"
    [[ -r ${credentials[$c]} ]] || die "--credential $c=${credentials[$c]}: no such readable file"
done
valid_device_name "$mqtt_user" || die "--mqtt-user '$mqtt_user': use 1-64 of [A-Za-z0-9_-]"
[[ $mqtt_bind == 0.0.0.0 ]] && mqtt_bind=
[[ $mqtt_bind =~ ^[0-9A-Za-z.:-]*$ ]] || die "--mqtt-bind '$mqtt_bind' is not an address"
if [[ $ROOT != / ]]; then
    [[ -d $ROOT ]] || die "--root $ROOT is not a directory"
    ROOT=$(cd -- "$ROOT" && pwd)
fi

# ---------------------------------------------------------------- paths
secrets_dir=/etc/co2-telemetry/secrets
sec_bridge_db=$secrets_dir/bridge-db-password
sec_grafana_db=$secrets_dir/grafana-db-password
sec_bridge_mqtt=$secrets_dir/bridge-mqtt-password
sec_grafana_admin=$secrets_dir/grafana-admin-password
mosq_dir=/etc/mosquitto
mosq_conf_d=$mosq_dir/conf.d
mosq_passwd=$mosq_dir/co2-telemetry.passwd
mosq_acl=$mosq_dir/co2-telemetry.acl
cert_dir=$mosq_dir/certs
bridge_conf=/etc/co2-bridge/bridge.toml
routes_conf=/etc/co2-bridge/routes.toml
bridge_unit=/etc/systemd/system/co2-bridge.service
cred_dropin=/etc/systemd/system/co2-bridge.service.d/50-co2-credentials.conf
# Where the unit's credentials appear for the service (LoadCredential=).
cred_dir=/run/credentials/co2-bridge.service
bridge_dest=/usr/local/bin/co2-bridge
r() { rootpath "$1"; }

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

# Services whose configuration changed in this run.
restart_mosquitto=0
reload_mosquitto=0
restart_bridge=0
restart_prometheus=0
restart_alertmanager=0
units_changed=0

# Add the "N changes" line a helper script printed to ours.
absorb_changes() {
    local n
    n=$(sed -n 's/^  *[a-z]* changes: \([0-9][0-9]*\)$/\1/p' "$1" | tail -n 1)
    CHANGES=$((CHANGES + ${n:-0}))
    [[ ${n:-0} == 0 ]]
}

# ---------------------------------------------------------------- preflight
blockers=()
step "preflight"
if [[ $ROOT == / ]]; then
    if ! is_root; then
        if [[ $DRY_RUN == 1 ]]; then
            warn "not root: some checks (secrets, database) cannot look; the plan may list too much"
        else
            die "run as root: sudo $0 $*"
        fi
    fi
    os_id=$( (. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}") 2>/dev/null || true)
    [[ " $os_id " == *" debian "* || " $os_id " == *" ubuntu "* || " $os_id " == *" raspbian "* ]] ||
        blockers+=("this installer supports Debian and Ubuntu (found '${os_id:-unknown}')")
    ok "target: this machine ($(. /etc/os-release && echo "$PRETTY_NAME"))"
else
    ok "target: files under --root $ROOT (no packages, no services)"
fi
if want bridge || want mosquitto; then
    if [[ -x $bridge_bin ]]; then
        ok "bridge binary $bridge_bin"
    else
        blockers+=("no co2-bridge binary at $bridge_bin: build it (cargo build --release -p co2-bridge) or pass --bridge-bin PATH (the broker's ACL is derived from it too)")
    fi
fi

# The bridge's config as it will be installed: the template, then the routes.
routes_src=
if [[ -n $routes_file ]]; then
    routes_src=$routes_file
elif [[ $no_routes == 0 && -f $(r "$routes_conf") ]]; then
    routes_src=$(r "$routes_conf")
fi
if [[ -n $device_listen ]]; then
    device_listen_line="device_listen = \"$device_listen\""
else
    device_listen_line='# device_listen = "127.0.0.1:9465"   (off: set with --device-listen)'
fi
render "$here/config/bridge.toml.in" "$tmp/bridge.toml" \
    "BRIDGE_PORT=$bridge_port" "MQTT_USER=$mqtt_user" "DB_USER=$db_bridge_user" \
    "DB_HOST=127.0.0.1" "DB_PORT=$db_port" "DB_NAME=$db_name" "DEVICE_LISTEN_LINE=$device_listen_line"
if [[ -n $routes_src ]]; then
    {
        printf '\n# ---- Routes: from %s (edit that file, then re-run ops/install-server.sh)\n\n' "$routes_conf"
        cat -- "$routes_src"
    } >>"$tmp/bridge.toml"
    ok "routes from ${routes_file:-$routes_conf}"
fi
# Credentials the config reads (e.g. a route's http.tokens_file), other than
# the two the unit always loads.
mapfile -t route_creds < <(sed 's/#.*//' "$tmp/bridge.toml" | grep -oE "${cred_dir//./\\.}/[^\"' ]*" |
    sed "s|^$cred_dir/||" | grep -vxE 'db-password|mqtt-password' | LC_ALL=C sort -u || true)
# For the commands run here as root (acl, migrate), the same config with each
# credential as the private copy systemd would make.
install -d -m 0700 "$tmp/creds"
for c in "${route_creds[@]}"; do
    if ! valid_credential_name "$c"; then
        blockers+=("the bridge config reads $cred_dir/$c: a credential name is 1-64 of [A-Za-z0-9_.-]")
        continue
    fi
    src=${credentials[$c]:-$(r "$secrets_dir/$c")}
    if [[ -r $src ]]; then
        cp -- "$src" "$tmp/creds/$c"
        ok "credential $c for the bridge: ${credentials[$c]:-$secrets_dir/$c}"
    elif [[ $DRY_RUN == 1 && ! -e $src ]] && ! is_root; then
        warn "cannot see $secrets_dir/$c (not root)"
    else
        blockers+=("the bridge config reads $cred_dir/$c, but $secrets_dir/$c does not exist: put it there (0600 root) or pass --credential $c=FILE")
    fi
done
for c in "${!credentials[@]}"; do
    [[ " ${route_creds[*]} " == *" $c "* ]] || warn "--credential $c: the bridge config does not read $cred_dir/$c (installed anyway)"
done
sed "s|$cred_dir/|$tmp/creds/|g" "$tmp/bridge.toml" >"$tmp/bridge-local.toml"
# The routes decide the broker's ACL; deriving it also checks the whole config.
acl_ready=0
if [[ -x $bridge_bin ]] && { want mosquitto || want bridge; }; then
    if env -i PATH="$PATH" "$bridge_bin" acl --config "$tmp/bridge-local.toml" >"$tmp/00-routes.acl" 2>"$tmp/acl.err" &&
        grep -q '^user ' "$tmp/00-routes.acl"; then
        acl_ready=1
        ok "bridge config accepted; ACL for its routes: $(grep -c '^pattern ' "$tmp/00-routes.acl") device pattern(s), $(grep -c '^#shared-topic ' "$tmp/00-routes.acl") shared topic(s)"
    else
        blockers+=("co2-bridge refuses the config it would be installed with (template + routes), or has no 'acl' command: $(tail -n 1 "$tmp/acl.err")")
    fi
fi
main_conf=$(r "$mosq_dir/mosquitto.conf")
if want mosquitto && [[ -f $main_conf ]]; then
    # The distribution's main file must leave listeners and authentication to
    # our drop-in: a second `listener 1883` fails, `allow_anonymous true` would
    # open the broker.
    bad=$(grep -nE '^[[:space:]]*(listener|port|bind_address|allow_anonymous|password_file|acl_file|per_listener_settings)([[:space:]]|$)' -- "$main_conf" || true)
    if [[ -n $bad ]]; then
        blockers+=("$mosq_dir/mosquitto.conf sets listeners or authentication itself; remove (or comment out) these lines, the drop-in $mosq_conf_d/10-co2-telemetry.conf provides them: $(tr '\n' ';' <<<"$bad")")
    else
        ok "$mosq_dir/mosquitto.conf leaves listeners and authentication to conf.d"
    fi
fi
if [[ ${#blockers[@]} -gt 0 ]]; then
    for b in "${blockers[@]}"; do printf '  BLOCKER %s\n' "$b"; done
    if [[ $DRY_RUN == 0 ]]; then
        die "${#blockers[@]} problem(s) above; nothing was changed"
    fi
    info "  (dry run: continuing to show the rest of the plan; a real run stops here)"
fi

# ---------------------------------------------------------------- packages
if want packages; then
    step "packages (distribution)"
    if [[ $ROOT != / ]]; then
        skip "packages: --root"
    else
        pkgs=(mosquitto mosquitto-clients mariadb-server mariadb-client prometheus prometheus-alertmanager openssl)
        missing=()
        for p in "${pkgs[@]}"; do
            if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]]; then
                ok "$p installed"
            else
                missing+=("$p")
            fi
        done
        if [[ ${#missing[@]} -gt 0 ]]; then
            change "install ${missing[*]}"
            run apt-get update
            # --no-install-recommends: prometheus would pull node-exporter,
            # which listens on every interface.
            run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
        fi
    fi
fi

# ---------------------------------------------------------------- secrets
if want secrets; then
    step "secrets ($secrets_dir, never printed)"
    ensure_dir "$(r /etc/co2-telemetry)" root root 0755
    ensure_dir "$(r "$secrets_dir")" root root 0700
    for s in "$sec_bridge_db" "$sec_grafana_db" "$sec_bridge_mqtt" "$sec_grafana_admin"; do
        n=$CHANGES
        ensure_secret "$(r "$s")" root root 0600
        # A new bridge secret (first install or rotation) needs a bridge restart;
        # the database and broker steps below bring the accounts in line.
        [[ $CHANGES == "$n" || $s != "$secrets_dir"/bridge-* ]] || restart_bridge=1
    done
    # A route's secret: copied in with --credential, or put there by hand.
    for c in "${!credentials[@]}"; do
        ensure_file "${credentials[$c]}" "$(r "$secrets_dir/$c")" root root 0600 && restart_bridge=1
    done
    for c in "${route_creds[@]}"; do
        [[ -n ${credentials[$c]:-} || ! -e $(r "$secrets_dir/$c") ]] || ensure_owner_mode "$(r "$secrets_dir/$c")" root root 0600
    done
fi

# ---------------------------------------------------------------- database
if want database; then
    step "database $db_name and accounts ($db_bridge_user: SELECT, INSERT, UPDATE; $db_grafana_user: SELECT)"
    if [[ $DRY_RUN == 1 && ! -s $(r "$sec_bridge_db") ]]; then
        change "create database $db_name (if missing), accounts '$db_bridge_user'@'$db_user_host' and '$db_grafana_user'@'$db_user_host' with the generated passwords, grants"
        info "          + provisioning/mysql/apply.sh --database $db_name ... (passwords from $secrets_dir)"
    elif ! command -v mariadb >/dev/null && ! command -v mysql >/dev/null; then
        change "create database and accounts (after the packages step installs the server)"
    else
        args=(--database "$db_name" --bridge-user "$db_bridge_user" --grafana-user "$db_grafana_user"
            --user-host "$db_user_host" --login-port "$db_port"
            --bridge-password-file "$(r "$sec_bridge_db")" --grafana-password-file "$(r "$sec_grafana_db")")
        [[ -z $db_admin_defaults ]] || args+=(--admin-defaults-file "$db_admin_defaults")
        [[ $DRY_RUN == 0 ]] || args+=(--dry-run)
        db_apply_args=("${args[@]}")
        "$repo/provisioning/mysql/apply.sh" "${args[@]}" | tee "$tmp/db.out"
        absorb_changes "$tmp/db.out" || true
    fi
fi

# ---------------------------------------------------------------- tls
if want tls; then
    step "TLS for MQTT ($cert_dir)"
    if [[ $tls == 0 ]]; then
        skip "--no-tls"
    else
        args=(--out "$cert_dir" --root "$ROOT")
        for s in "${tls_sans[@]}"; do args+=(--san "$s"); done
        [[ $DRY_RUN == 0 ]] || args+=(--dry-run)
        getent group mosquitto >/dev/null || args+=(--key-group root)
        "$here/make-certs.sh" "${args[@]}" | tail -n +3 | tee "$tmp/tls.out"
        absorb_changes "$tmp/tls.out" || restart_mosquitto=1
    fi
fi

# ---------------------------------------------------------------- mosquitto
if want mosquitto; then
    step "Mosquitto: no anonymous access, per-device users, ACL ($mosq_dir)"
    if [[ -f $main_conf ]] && ! grep -qE "^[[:space:]]*include_dir[[:space:]]+$mosq_conf_d/?[[:space:]]*$" -- "$main_conf"; then
        change "add 'include_dir $mosq_conf_d' to $mosq_dir/mosquitto.conf"
        [[ $DRY_RUN == 1 ]] || printf '\n# Added by co2-telemetry ops/install-server.sh\ninclude_dir %s\n' "$mosq_conf_d" >>"$main_conf"
        restart_mosquitto=1
    elif [[ ! -f $main_conf ]]; then
        skip "$mosq_dir/mosquitto.conf not present under the target root (it comes with the package)"
    fi
    ensure_dir "$(r "$mosq_dir")" root root 0755
    ensure_dir "$(r "$mosq_conf_d")" root root 0755
    render "$repo/provisioning/mosquitto/co2-telemetry.conf.in" "$tmp/co2-telemetry.conf" \
        "PASSWORD_FILE=$(r "$mosq_passwd")" "ACL_FILE=$(r "$mosq_acl")" "MQTT_PORT=$mqtt_port" "MQTT_BIND=$mqtt_bind" \
        "BRIDGE_PORT=$bridge_port" "BRIDGE_BIND=127.0.0.1"
    ensure_file "$tmp/co2-telemetry.conf" "$(r "$mosq_conf_d/10-co2-telemetry.conf")" root root 0644 && restart_mosquitto=1
    tls_conf=$(r "$mosq_conf_d/20-co2-telemetry-tls.conf")
    if [[ $tls == 1 ]]; then
        render "$repo/provisioning/mosquitto/co2-telemetry-tls.conf.in" "$tmp/co2-telemetry-tls.conf" \
            "MQTTS_PORT=$mqtts_port" "MQTTS_BIND=" \
            "CERT_FILE=$(r "$cert_dir/server.crt")" "KEY_FILE=$(r "$cert_dir/server.key")"
        ensure_file "$tmp/co2-telemetry-tls.conf" "$tls_conf" root root 0644 && restart_mosquitto=1
    elif [[ -f $tls_conf ]]; then
        change "remove $mosq_conf_d/20-co2-telemetry-tls.conf (--no-tls)"
        run rm -f -- "$tls_conf"
        restart_mosquitto=1
    fi

    mgroup=mosquitto
    getent group mosquitto >/dev/null || mgroup=root
    # The ACL: the routes' part from the bridge, then each device's shared topics.
    acl_file=$(r "$mosq_acl")
    if [[ $acl_ready == 1 ]]; then
        mqtt_acl_stage "$acl_file" "$tmp/acl-stage"
        cp -- "$tmp/00-routes.acl" "$tmp/acl-stage/00-routes.acl"
        assemble_mqtt_acl "$acl_file" "$mgroup" "$tmp/acl-stage" && reload_mosquitto=1
        ensure_dir "$acl_file.d" root root 0755
        ensure_file "$tmp/00-routes.acl" "$acl_file.d/00-routes.acl" root root 0644 || true
        # A shared topic no route reads any more stays granted until revoked.
        for part in "$acl_file.d"/device-*.acl; do
            [[ -f $part ]] || continue
            device=$(basename -- "$part" .acl)
            device=${device#device-}
            while read -r _ _ topic; do
                grep -qxF "#shared-topic $topic" "$tmp/00-routes.acl" ||
                    warn "device $device may still publish to '$topic', which no route reads now: ops/add-device.sh --no-shared-topics $device revokes it"
            done < <(grep '^topic write ' "$part")
        done
    else
        change "write $mosq_acl from the bridge's routes (co2-bridge acl; binary or config missing, see above)"
    fi

    pf=$(r "$mosq_passwd")
    if [[ ! -f $pf ]]; then
        change "create password file $mosq_passwd (0640 root:$mgroup)"
        [[ $DRY_RUN == 1 ]] || install -m 0640 -g "$mgroup" /dev/null "$pf"
    fi
    ensure_owner_mode "$pf" root "$mgroup" 0640
    # The bridge's broker password: the hash in the password file must match
    # the secret the bridge gets. PBKDF2 is salted, so compare by verifying.
    bridge_pw_file=$(r "$sec_bridge_mqtt")
    if [[ -f $pf ]] && grep -q "^$mqtt_user:" -- "$pf" && [[ -s $bridge_pw_file ]] &&
        ! command -v python3 >/dev/null; then
        ok "broker user $mqtt_user exists (python3 missing: cannot verify it matches $sec_bridge_mqtt)"
    elif [[ -f $pf ]] && grep -q "^$mqtt_user:" -- "$pf" && [[ -s $bridge_pw_file ]] &&
        python3 "$here/lib/mosquitto_pw_check.py" "$pf" "$mqtt_user" <"$bridge_pw_file" 2>/dev/null; then
        ok "broker user $mqtt_user matches $sec_bridge_mqtt"
    else
        if [[ -f $pf ]] && grep -q "^$mqtt_user:" -- "$pf"; then
            change "reset broker user $mqtt_user's password to $sec_bridge_mqtt"
        else
            change "add broker user $mqtt_user (password from $sec_bridge_mqtt)"
        fi
        info "          + mosquitto_passwd $mosq_passwd $mqtt_user  (password on stdin, not shown)"
        if [[ $DRY_RUN == 0 ]]; then
            require_cmd mosquitto_passwd
            pw=$(head -n 1 -- "$bridge_pw_file")
            printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "$pf" "$mqtt_user" >/dev/null
            unset pw
        fi
        reload_mosquitto=1
    fi
fi

# ---------------------------------------------------------------- bridge
if want bridge; then
    step "co2-bridge (binary, config, unit, schema)"
    if [[ -x $bridge_bin ]]; then
        ensure_file "$bridge_bin" "$(r "$bridge_dest")" root root 0755 && restart_bridge=1
    else
        change "install $bridge_dest (binary missing: see the blocker above)"
    fi
    ensure_dir "$(r /etc/co2-bridge)" root root 0755
    if [[ -n $routes_file ]]; then
        ensure_file "$routes_file" "$(r "$routes_conf")" root root 0644 || true
    elif [[ $no_routes == 1 && -e $(r "$routes_conf") ]]; then
        change "remove $routes_conf (--no-routes)"
        run rm -f -- "$(r "$routes_conf")"
    fi
    ensure_file "$tmp/bridge.toml" "$(r "$bridge_conf")" root root 0644 && restart_bridge=1
    unit_src=$here/systemd/co2-bridge.service
    sd_version=$(systemctl --version 2>/dev/null | awk 'NR==1{print $2}' || true)
    if [[ -n $sd_version && $sd_version -lt 248 ]]; then
        # %d (the credentials directory) arrived in systemd 248.
        sed 's|%d/|/run/credentials/%n/|g' "$unit_src" >"$tmp/co2-bridge.service"
        unit_src=$tmp/co2-bridge.service
    fi
    if ensure_file "$unit_src" "$(r "$bridge_unit")" root root 0644; then
        restart_bridge=1
        units_changed=1
    fi
    # The routes' credentials: systemd copies each root-only secret for the
    # service alone, which runs as a dynamic user and could not read it.
    if [[ ${#route_creds[@]} -gt 0 ]]; then
        {
            printf '# Rendered by ops/install-server.sh: the credentials %s reads\n' "$bridge_conf"
            printf '# from %s/. Re-running the installer rewrites this file.\n' "$cred_dir"
            printf '[Service]\n'
            for c in "${route_creds[@]}"; do printf 'LoadCredential=%s:%s/%s\n' "$c" "$secrets_dir" "$c"; done
        } >"$tmp/credentials.conf"
        ensure_dir "$(r "$(dirname -- "$cred_dropin")")" root root 0755
    fi
    if sync_file "$tmp/credentials.conf" "$(r "$cred_dropin")" root root 0644; then
        restart_bridge=1
        units_changed=1
    fi
    if [[ $migrate == 0 ]]; then
        skip "schema migration (--no-migrate)"
    elif ! want database; then
        skip "schema migration (database step not selected)"
    else
        if [[ -n $db_admin_url_file ]]; then
            [[ -s $db_admin_url_file ]] || die "--db-admin-url-file $db_admin_url_file is empty or missing"
            admin_url=$(head -n 1 -- "$db_admin_url_file")
        else
            sock=$( (mariadb -NBe 'SELECT @@socket' || mysql -NBe 'SELECT @@socket') 2>/dev/null || true)
            admin_url="mysql://root@localhost/$db_name?socket=${sock:-/run/mysqld/mysqld.sock}"
        fi
        admin_client=("$(command -v mariadb || command -v mysql)")
        [[ -z $db_admin_defaults ]] || admin_client+=("--defaults-extra-file=$db_admin_defaults")
        count_migrations() {
            "${admin_client[@]}" -NBe "SELECT COUNT(*) FROM \`$db_name\`._sqlx_migrations WHERE success" 2>/dev/null || echo 0
        }
        if [[ $DRY_RUN == 1 || ! -x $(r "$bridge_dest") ]]; then
            change "apply pending schema migrations as the admin account"
            info "          + CO2_BRIDGE__DATABASE__URL=<admin url> $bridge_dest migrate --config $bridge_conf"
        else
            before=$(count_migrations)
            info "          + CO2_BRIDGE__DATABASE__URL=<admin url> $bridge_dest migrate --config $bridge_conf"
            CO2_BRIDGE__DATABASE__URL=$admin_url CO2_BRIDGE__MQTT__PASSWORD_FILE=$(r "$sec_bridge_mqtt") \
                "$(r "$bridge_dest")" migrate --config "$tmp/bridge-local.toml" >"$tmp/migrate.out" 2>&1 ||
                { cat "$tmp/migrate.out" >&2; die "co2-bridge migrate failed (output above); fix and re-run, nothing else depends on it yet"; }
            after=$(count_migrations)
            if [[ $before == "$after" ]]; then
                ok "schema up to date ($after migrations applied)"
            else
                change "applied $((after - before)) schema migration(s) ($after in all)"
                restart_bridge=1
                # Grants on single tables (the bridge's DELETE on rejected_messages)
                # need the tables the migrations just made.
                if ((${#db_apply_args[@]})); then
                    "$repo/provisioning/mysql/apply.sh" "${db_apply_args[@]}" | tee "$tmp/db-after.out"
                    absorb_changes "$tmp/db-after.out" || true
                fi
            fi
        fi
    fi
fi

# ---------------------------------------------------------------- prometheus
if want prometheus; then
    step "Prometheus (loopback only, scrapes the bridge)"
    pdir=/etc/prometheus
    if [[ $ROOT == / && ! -d $pdir && $DRY_RUN == 0 ]]; then
        die "$pdir missing: the packages step installs prometheus"
    fi
    ensure_dir "$(r "$pdir")" root root 0755
    ensure_file "$repo/provisioning/prometheus/prometheus.yml" "$(r "$pdir/prometheus.yml")" root root 0644 && restart_prometheus=1
    ensure_dir "$(r "$pdir/rules")" root root 0755
    for f in "$repo"/provisioning/prometheus/rules/*.yml; do
        [[ $f == *.test.yml ]] && continue
        ensure_file "$f" "$(r "$pdir/rules/${f##*/}")" root root 0644 && restart_prometheus=1
    done
    ensure_dir "$(r "$pdir/targets")" root root 0755
    printf '# Rendered by ops/install-server.sh: the bridge on this host.\n- targets:\n    - 127.0.0.1:9464\n' >"$tmp/co2-bridge.yml"
    ensure_file "$tmp/co2-bridge.yml" "$(r "$pdir/targets/co2-bridge.yml")" root root 0644 || true
    printf '# Rendered by ops/install-server.sh: the Alertmanager on this host.\n- targets:\n    - 127.0.0.1:9093\n' >"$tmp/alertmanager-targets.yml"
    ensure_file "$tmp/alertmanager-targets.yml" "$(r "$pdir/targets/alertmanager.yml")" root root 0644 || true
    # Debian's prometheus listens on every interface; keep it on loopback.
    defaults=$(r /etc/default/prometheus)
    if [[ -f $defaults ]] && grep -q -- '--web.listen-address' "$defaults"; then
        ok "/etc/default/prometheus sets --web.listen-address (left as is)"
    elif [[ -f $defaults ]] && grep -qE '^ARGS=""' "$defaults"; then
        change "set ARGS=\"--web.listen-address=127.0.0.1:9090\" in /etc/default/prometheus"
        run sed -i 's/^ARGS=""/ARGS="--web.listen-address=127.0.0.1:9090"/' "$defaults"
        restart_prometheus=1
    elif [[ -f $defaults ]]; then
        warn "/etc/default/prometheus has custom ARGS: add --web.listen-address=127.0.0.1:9090 yourself"
    else
        skip "/etc/default/prometheus not present under the target root"
    fi
fi

# ---------------------------------------------------------------- alertmanager
if want alertmanager; then
    step "Alertmanager (loopback only; receivers from /etc/co2-telemetry/alerts.env)"
    pdir=/etc/prometheus
    alerts_env=/etc/co2-telemetry/alerts.env
    am_secrets=$pdir/co2-alert-secrets
    pgroup=prometheus
    getent group prometheus >/dev/null || pgroup=root
    ensure_dir "$(r /etc/co2-telemetry)" root root 0755
    # The receivers are the operator's: written once from the example, never overwritten.
    if [[ -f $(r "$alerts_env") ]]; then
        ok "$alerts_env present (left as is)"
    else
        change "install $alerts_env (no receiver set yet: edit it, then re-run)"
        run install -m 0644 -- "$repo/provisioning/alertmanager/alerts.env.example" "$(r "$alerts_env")"
    fi
    # Alertmanager runs as prometheus: it gets its own copy of the receivers'
    # secrets, which stay root-only in $secrets_dir.
    ensure_dir "$(r "$pdir")" root root 0755
    ensure_dir "$(r "$am_secrets")" root "$pgroup" 0750
    am_env=()
    for pair in alert-smtp-password:smtp-password:ALERT_SMTP_PASSWORD_FILE alert-ntfy-token:ntfy-token:ALERT_NTFY_TOKEN_FILE; do
        IFS=: read -r src dest var <<<"$pair"
        sync_file "$(r "$secrets_dir/$src")" "$(r "$am_secrets/$dest")" root "$pgroup" 0640 && restart_alertmanager=1
        [[ ! -f $(r "$secrets_dir/$src") ]] || am_env+=("$var=$am_secrets/$dest")
    done
    install -d -m 0700 "$tmp/am"
    if [[ -f $(r "$alerts_env") ]]; then
        env_src=$(r "$alerts_env")
    else
        env_src=$repo/provisioning/alertmanager/alerts.env.example
    fi
    # The settings file is root's (like /etc/default/*): read it in a subshell.
    # shellcheck source=/dev/null
    if ! (set -a && . "$env_src" && set +a && env "${am_env[@]}" ALERT_CONFIG_DIR="$pdir" \
        sh "$repo/provisioning/alertmanager/render.sh" "$tmp/am") 2>"$tmp/am.err"; then
        die "$alerts_env: $(tail -n 1 "$tmp/am.err")"
    fi
    grep -q 'no receiver set' "$tmp/am.err" && warn "no receiver in $alerts_env: alerts reach nobody until you set one and re-run"
    if command -v amtool >/dev/null; then
        # Checked where it will live: the config names the template by its installed path.
        sed "s|'$pdir/co2.tmpl'|'$tmp/am/co2.tmpl'|" "$tmp/am/alertmanager.yml" >"$tmp/am/check.yml"
        amtool check-config "$tmp/am/check.yml" >"$tmp/am.check" 2>&1 ||
            die "the rendered Alertmanager config fails amtool check-config: $(tail -n 3 "$tmp/am.check" | tr '\n' ' ')"
        ok "amtool check-config: the rendered config is valid"
    fi
    # 0640 root:prometheus: a webhook URL may carry a token.
    ensure_file "$tmp/am/alertmanager.yml" "$(r "$pdir/alertmanager.yml")" root "$pgroup" 0640 && restart_alertmanager=1
    ensure_file "$tmp/am/co2.tmpl" "$(r "$pdir/co2.tmpl")" root root 0644 && restart_alertmanager=1
    # Debian's alertmanager listens on every interface, and its cluster port
    # too; one instance needs no cluster.
    defaults=$(r /etc/default/prometheus-alertmanager)
    am_args='--web.listen-address=127.0.0.1:9093 --cluster.listen-address='
    if [[ -f $defaults ]] && grep -q -- '--web.listen-address' "$defaults"; then
        ok "/etc/default/prometheus-alertmanager sets --web.listen-address (left as is)"
    elif [[ -f $defaults ]] && grep -qE '^ARGS=""' "$defaults"; then
        change "set ARGS=\"$am_args\" in /etc/default/prometheus-alertmanager"
        run sed -i "s/^ARGS=\"\"/ARGS=\"$am_args\"/" "$defaults"
        restart_alertmanager=1
    elif [[ -f $defaults ]]; then
        warn "/etc/default/prometheus-alertmanager has custom ARGS: add $am_args yourself"
    else
        skip "/etc/default/prometheus-alertmanager not present under the target root"
    fi
fi

# ---------------------------------------------------------------- grafana
if want grafana; then
    step "Grafana (official repository; ops/install-grafana.sh)"
    args=(--root "$ROOT" --db-name "$db_name" --db-user "$db_grafana_user" --db-port "$db_port"
        --db-password-file "$sec_grafana_db" --admin-password-file "$sec_grafana_admin")
    [[ $DRY_RUN == 0 ]] || args+=(--dry-run)
    "$here/install-grafana.sh" "${args[@]}" | tail -n +3 | tee "$tmp/grafana.out"
    absorb_changes "$tmp/grafana.out" || true
fi

# ---------------------------------------------------------------- services
if want services; then
    step "services"
    services=(mariadb mosquitto prometheus prometheus-alertmanager co2-bridge)
    want grafana && services+=(grafana-server)
    if [[ $ROOT != / ]]; then
        skip "systemctl (--root: nothing to enable in a directory)"
    elif ! have_systemd; then
        skip "systemd is not running on this machine (PID 1 is '$(pid1_name)'), so nothing can be enabled here."
        skip "on a real server this step runs: systemctl daemon-reload; systemctl enable --now ${services[*]}"
        skip "and restarts what changed (mosquitto: $restart_mosquitto, co2-bridge: $restart_bridge, prometheus: $restart_prometheus, prometheus-alertmanager: $restart_alertmanager)"
    else
        [[ $units_changed == 0 ]] || run systemctl daemon-reload
        for s in "${services[@]}"; do
            if systemctl is-enabled --quiet "$s" 2>/dev/null && systemctl is-active --quiet "$s"; then
                ok "$s enabled and running"
            else
                change "enable and start $s"
                run systemctl enable --now "$s"
            fi
        done
        if [[ $restart_mosquitto == 1 ]]; then
            change "restart mosquitto (listeners or certificates changed)"
            run systemctl restart mosquitto
        elif [[ $reload_mosquitto == 1 ]]; then
            change "reload mosquitto (users or ACL changed)"
            run systemctl reload mosquitto
        fi
        if [[ $restart_bridge == 1 ]]; then
            change "restart co2-bridge (binary, config or unit changed)"
            run systemctl restart co2-bridge
        fi
        if [[ $restart_prometheus == 1 ]]; then
            change "restart prometheus (configuration changed)"
            run systemctl restart prometheus
        fi
        if [[ $restart_alertmanager == 1 ]]; then
            change "restart prometheus-alertmanager (configuration or receivers changed)"
            run systemctl restart prometheus-alertmanager
        fi
    fi
fi

printf '\n'
if [[ $DRY_RUN == 1 ]]; then
    info "dry run: $CHANGES change(s) planned, nothing was changed"
    [[ ${#blockers[@]} -eq 0 ]] || info "a real run would stop first: ${#blockers[@]} blocker(s) listed under preflight"
else
    info "done: changes: $CHANGES"
    [[ $CHANGES -gt 0 ]] || info "(already installed as wanted)"
fi
