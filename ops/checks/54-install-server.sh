#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted inner scripts expand their own "$1".. arguments
# The installers, for real where this machine allows:
# - `ops/install-server.sh --dry-run` on this machine prints the plan, says
#   systemd is not running, and changes nothing on the system;
# - a real run into a temp root (files) and the local MariaDB (a throwaway
#   database and accounts) installs everything, runs `co2-bridge migrate` as
#   the admin, and a second run reports 0 changes with identical files;
# - with a built bridge: the installed bridge, run with its installed config
#   and the unit's credential variables, carries a reading published over TLS
#   by a device from ops/add-device.sh into MySQL through the DML-only account;
# - a route that reads a tokens file gets it as a systemd credential: the
#   installer copies the secret (0600 root), writes the LoadCredential= drop-in
#   (`systemd-analyze verify` reads it, no warnings) and points the route at
#   /run/credentials/co2-bridge.service/<name>; the installed bridge, as an
#   unprivileged user, reads its config with the credential there (a private
#   mount namespace stands in for systemd) and cannot read the original;
# - a main mosquitto.conf that allows anonymous access blocks a real run;
# - `ops/install-pi.sh` installs a device bundle into a temp root, idempotently.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
repo=$(cd -- "$ops/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 54-install-server: installers (dry run here, real run into a temp root)"
sfx=$(rand_suffix)
db=co2_t54_$sfx
bu=t54b_$sfx
gu=t54g_$sfx
work=$(mktemp -d)
chmod 0755 "$work"
root=$work/root
mkdir -p "$root"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    mariadb -e "DROP DATABASE IF EXISTS \`$db\`; DROP USER IF EXISTS '$bu'@'127.0.0.1'; DROP USER IF EXISTS '$gu'@'127.0.0.1';" 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT

# ---- dry run on this machine
snapshot() {
    for p in /etc/mosquitto /etc/co2-telemetry /etc/co2-bridge /usr/local/bin/co2-bridge \
        /etc/systemd/system/co2-bridge.service /etc/prometheus /etc/default/prometheus /etc/grafana; do
        if [[ -e $p ]]; then find "$p" -printf '%p %m %U %G %s %T@\n' 2>/dev/null; else echo "$p absent"; fi
    done | sort
    mariadb -NBe "SELECT COUNT(*) FROM mysql.user WHERE User IN ('co2_bridge','co2_grafana')" 2>/dev/null || true
}
snapshot >"$work/before"
"$ops/install-server.sh" --dry-run >"$work/dry.out" 2>&1 && rc=0 || rc=$?
check "install-server.sh --dry-run exits 0 here" test "$rc" == 0
check "--dry-run prints a plan of changes" grep -qE '^dry run: [0-9]+ change\(s\) planned, nothing was changed$' "$work/dry.out"
check "--dry-run shows the exact commands (e.g. the Grafana repository)" grep -q "signed-by=/etc/apt/keyrings/grafana.gpg" "$work/dry.out"
check "--dry-run says systemd is not running here" grep -q "systemd is not running on this machine" "$work/dry.out"
check "--dry-run names this machine's anonymous mosquitto.conf as a blocker" grep -q "BLOCKER .*mosquitto.conf" "$work/dry.out"
check "--dry-run changed nothing on this machine" diff -u "$work/before" <(snapshot)
check "--dry-run printed no secret" bash -c '! grep -qiE "password *[:=] *[A-Za-z0-9]{20,}" "$1"' _ "$work/dry.out"

# ---- real run into a temp root
bridge_bin=$(built_bin co2-bridge acl)
if [[ -z $bridge_bin ]]; then
    bridge_bin=$work/stub-co2-bridge
    printf '#!/bin/sh\n[ "$1" != acl ] || echo "user co2-bridge"\nexit 0\n' >"$bridge_bin"
    chmod 0755 "$bridge_bin"
fi
port=$(free_port)
tport=$(free_port)
while [[ $tport == "$port" ]]; do tport=$(free_port); done
bport=$(free_port)
while [[ $bport == "$port" || $bport == "$tport" ]]; do bport=$(free_port); done
mkdir -p "$root/etc/mosquitto" "$root/etc/default"
# Debian's own main file (no include_dir yet, to see the installer add it) and prometheus defaults.
printf 'pid_file /run/mosquitto/mosquitto.pid\npersistence true\npersistence_location /var/lib/mosquitto/\nlog_dest file /var/log/mosquitto/mosquitto.log\n' \
    >"$root/etc/mosquitto/mosquitto.conf"
printf '# Set the command-line arguments to pass to the server.\nARGS=""\n' >"$root/etc/default/prometheus"
printf '# Set the command-line arguments to pass to the server.\nARGS=""\n' >"$root/etc/default/prometheus-alertmanager"
inst=("$ops/install-server.sh" --root "$root" --bridge-bin "$bridge_bin" --db-name "$db"
    --db-bridge-user "$bu" --db-grafana-user "$gu" --mqtt-port "$port" --mqtts-port "$tport"
    --bridge-port "$bport" --tls-san DNS:localhost --tls-san IP:127.0.0.1)
check "install-server.sh real run into a temp root + throwaway database" "${inst[@]}"
tree_state() { (cd "$root" && find . -printf '%p %m %u %g %s\n' | sort && find . -type f -exec sha256sum {} + | sort); }
tree_state >"$work/tree1"
"${inst[@]}" >"$work/run2.out" 2>&1 && rc=0 || rc=$?
check "second run succeeds" test "$rc" == 0
check "second run reports 'done: changes: 0'" grep -qx "done: changes: 0" "$work/run2.out"
check "second run leaves every file, mode and owner as it was" diff -u "$work/tree1" <(tree_state)
check "include_dir added to the main mosquitto.conf once" test "$(grep -c '^include_dir ' "$root/etc/mosquitto/mosquitto.conf")" == 1
check "Prometheus kept on loopback" grep -qx 'ARGS="--web.listen-address=127.0.0.1:9090"' "$root/etc/default/prometheus"
check "Prometheus scrapes the bridge on 127.0.0.1:9464" grep -q '127.0.0.1:9464' "$root/etc/prometheus/targets/co2-bridge.yml"
check "Prometheus sends alerts to 127.0.0.1:9093" grep -q '127.0.0.1:9093' "$root/etc/prometheus/targets/alertmanager.yml"
check "Alertmanager kept on loopback, no cluster port" \
    grep -qx 'ARGS="--web.listen-address=127.0.0.1:9093 --cluster.listen-address="' "$root/etc/default/prometheus-alertmanager"
check "alerts.env installed from the example (no receiver yet)" cmp "$repo/provisioning/alertmanager/alerts.env.example" "$root/etc/co2-telemetry/alerts.env"
am_check() { sed "s|'/etc/prometheus/co2.tmpl'|'$root/etc/prometheus/co2.tmpl'|" "$root/etc/prometheus/alertmanager.yml" >"$work/am-check.yml" && amtool check-config "$work/am-check.yml"; }
if command -v amtool >/dev/null; then
    check "the installed Alertmanager config passes amtool check-config" am_check
else
    fail "amtool is not installed (apt-get install prometheus-alertmanager)"
fi
check "Grafana data source points at this host's MySQL" grep -q "url: 127.0.0.1:3306" "$root/etc/grafana/provisioning/datasources/co2-telemetry.yml"
check "Grafana's env file (admin + MySQL password) is 0600 root" test "$(stat -c '%a %U' "$root/etc/co2-telemetry/secrets/grafana.env")" == "600 root"
check "bridge.toml holds no password" bash -c '! grep -qi "password *=" "$1"' _ "$root/etc/co2-bridge/bridge.toml"
check "every generated secret is 43 random characters" \
    bash -c 'for f in "$1"/*-password; do [[ $(tr -d "\n" <"$f" | wc -c) == 43 ]] || exit 1; done' _ "$root/etc/co2-telemetry/secrets"
check "the installed unit is the repository's" cmp "$ops/systemd/co2-bridge.service" "$root/etc/systemd/system/co2-bridge.service"
check "no credentials drop-in without a route that needs one" test ! -e "$root/etc/systemd/system/co2-bridge.service.d/50-co2-credentials.conf"

# ---- a receiver set in alerts.env, with its secret
sed -i -e 's/^ALERT_EMAIL_TO=$/ALERT_EMAIL_TO=ops@example.org/' -e 's/^ALERT_EMAIL_FROM=$/ALERT_EMAIL_FROM=co2@example.org/' \
    -e 's/^ALERT_SMTP_HOST=$/ALERT_SMTP_HOST=smtp.example.org:587/' -e 's/^ALERT_SMTP_USER=$/ALERT_SMTP_USER=co2/' \
    "$root/etc/co2-telemetry/alerts.env"
printf '%s' "pw-$sfx" >"$root/etc/co2-telemetry/secrets/alert-smtp-password"
chmod 0600 "$root/etc/co2-telemetry/secrets/alert-smtp-password"
"${inst[@]}" --only alertmanager >"$work/am1.out" 2>&1 && rc=0 || rc=$?
check "--only alertmanager with an e-mail receiver set" test "$rc" == 0
check "... the config mails ops@example.org with the password file the installer copied" \
    grep -q "auth_password_file: '/etc/prometheus/co2-alert-secrets/smtp-password'" "$root/etc/prometheus/alertmanager.yml"
check "... the copy holds the secret, 0640 root, the config does not" bash -c \
    '[[ $(stat -c "%a %U" "$1") == "640 root" ]] && [[ $(cat "$1") == "$2" ]] && ! grep -q "$2" "$3"' _ \
    "$root/etc/prometheus/co2-alert-secrets/smtp-password" "pw-$sfx" "$root/etc/prometheus/alertmanager.yml"
if command -v amtool >/dev/null; then check "... amtool check-config passes" am_check; fi
"${inst[@]}" --only alertmanager >"$work/am2.out" 2>&1 || true
check "... and a second run: 0 changes" grep -qx "done: changes: 0" "$work/am2.out"

# ---- with the real bridge: schema, grants, end to end
if [[ $bridge_bin == "$work/stub-co2-bridge" ]]; then
    skip_check "co2-bridge not built: migration and end-to-end run not exercised"
else
    check "co2-bridge migrate (as admin) created co2_emissions" \
        test "$(mariadb -NBe "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='$db' AND TABLE_NAME IN ('co2_emissions','rejected_messages')")" == 2
    # The broker, as installed (drop-ins from the temp root).
    mkdir -p "$work/data"
    chown mosquitto:mosquitto "$work/data" 2>/dev/null || true
    printf 'pid_file %s/data/m.pid\npersistence_location %s/data/\nlog_dest stderr\nuser mosquitto\ninclude_dir %s/etc/mosquitto/conf.d\n' \
        "$work" "$work" "$root" >"$work/mosquitto.conf"
    mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    pids+=($!)
    check "Mosquitto runs the installed config" wait_port 127.0.0.1 "$tport"
    "$ops/add-device.sh" --root "$root" --host localhost --port "$tport" --out "$work/bundle" "pi-$sfx" >/dev/null 2>&1
    kill -HUP "${pids[0]}"
    # The bridge, as the unit runs it: installed binary + config + credentials.
    hport=$(free_port)
    env CO2_BRIDGE__DATABASE__PASSWORD_FILE="$root/etc/co2-telemetry/secrets/bridge-db-password" \
        CO2_BRIDGE__MQTT__PASSWORD_FILE="$root/etc/co2-telemetry/secrets/bridge-mqtt-password" \
        CO2_BRIDGE__HTTP__LISTEN="127.0.0.1:$hport" CO2_BRIDGE__MQTT__CLIENT_ID="co2-bridge-t54-$sfx" \
        "$root/usr/local/bin/co2-bridge" run --config "$root/etc/co2-bridge/bridge.toml" >"$work/bridge.log" 2>&1 &
    pids+=($!)
    ready=0
    for _ in $(seq 100); do
        if python3 -c 'import sys,urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)' \
            "http://127.0.0.1:$hport/readyz" 2>/dev/null; then ready=1; break; fi
        sleep 0.2
    done
    check "the installed bridge becomes ready (MQTT as its broker user, MySQL as the DML-only account)" test "$ready" == 1
    ts=$(date -u +'%Y-%m-%d %H:%M:%S')
    mosquitto_pub -h localhost -p "$tport" --cafile "$root/etc/mosquitto/certs/ca.crt" -q 1 \
        -u "pi-$sfx" -P "$(cat "$work/bundle/mqtt-password")" -t "co2/pi-$sfx/emissions" -m "$ts|412.50" >/dev/null 2>&1 || true
    rows=0
    for _ in $(seq 50); do
        rows=$(mariadb -NBe "SELECT COUNT(*) FROM \`$db\`.co2_emissions WHERE device='pi-$sfx' AND emissions=412.50" 2>/dev/null || echo 0)
        [[ $rows == 1 ]] && break
        sleep 0.2
    done
    check "a reading published over TLS by an added device lands in MySQL" test "$rows" == 1
    if [[ $rows != 1 ]]; then tail -n 15 "$work/bridge.log" | sed 's/^/      | /'; fi
fi

# ---- a route's tokens file as a systemd credential
root3=$work/root3
mkdir -p "$root3"
cred=/run/credentials/co2-bridge.service/camera-tokens
sed -e 's|^# \[routes.http\]|[routes.http]|' -e "s|^# tokens_file = .*|tokens_file = \"$cred\"|" \
    "$repo/bridge/routes.example.toml" >"$work/routes-http.toml"
printf 'cam-1 %s\n' "$(openssl rand -hex 24)" >"$work/camera.tokens"
inst3=("$ops/install-server.sh" --root "$root3" --bridge-bin "$bridge_bin" --only "secrets,mosquitto,bridge"
    --bridge-port "$bport" --routes "$work/routes-http.toml" --device-listen 127.0.0.1:9465)
check_not "a route reading a credential that does not exist blocks the run" "${inst3[@]}"
check "--credential camera-tokens=FILE installs it for the route" "${inst3[@]}" --credential "camera-tokens=$work/camera.tokens"
"${inst3[@]}" >"$work/run3.out" 2>&1 || true
check "second run (the credential now in place): 0 changes" grep -qx "done: changes: 0" "$work/run3.out"
check "the secret is 0600 root and holds the tokens" bash -c \
    '[[ $(stat -c "%a %U" "$1") == "600 root" ]] && cmp "$1" "$2"' _ "$root3/etc/co2-telemetry/secrets/camera-tokens" "$work/camera.tokens"
dropin=$root3/etc/systemd/system/co2-bridge.service.d/50-co2-credentials.conf
check "the drop-in loads it: LoadCredential=camera-tokens:/etc/co2-telemetry/secrets/camera-tokens" \
    test "$(grep '^LoadCredential=' "$dropin" 2>/dev/null)" == "LoadCredential=camera-tokens:/etc/co2-telemetry/secrets/camera-tokens"
check "the installed route reads $cred" grep -qx "tokens_file = \"$cred\"" "$root3/etc/co2-bridge/bridge.toml"
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$root3/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$root3/usr/lib/systemd/system"
    systemd-analyze verify --root="$root3" co2-bridge.service >"$work/verify3.out" 2>&1 && rc=0 || rc=$?
    check "systemd-analyze verify co2-bridge.service with the drop-in: no warnings" bash -c '[[ $1 == 0 && ! -s $2 ]] || { cat "$2"; exit 1; }' _ "$rc" "$work/verify3.out"
    cp "$dropin" "$work/dropin.bak"
    echo "LoadCredentialz=x:y" >>"$dropin"
    systemd-analyze verify --root="$root3" co2-bridge.service >"$work/verify4.out" 2>&1 || true
    cp "$work/dropin.bak" "$dropin"
    check "... and verify does read the drop-in (it flags a misspelt key there)" grep -q "Unknown key 'LoadCredentialz'" "$work/verify4.out"
else
    fail "systemd-analyze is not installed (apt-get install systemd)"
fi
if [[ $bridge_bin == "$work/stub-co2-bridge" ]]; then
    skip_check "co2-bridge not built: reading the credential as the service's user not exercised"
else
    # As systemd does for the service: a private copy under /run/credentials
    # readable by the service's (dynamic, unprivileged) user alone. /run is a
    # fresh tmpfs in a private mount namespace, so the host's is untouched.
    svc_uid=61954
    as_service() { # SCRIPT: run as root in a private mount namespace, then the command as svc_uid
        unshare --mount --propagation private bash -euc "mount -t tmpfs -o mode=0755 tmpfs /run; $1" _ "${@:2}"
    }
    creds_then='mkdir -p /run/credentials/co2-bridge.service
        install -m 0400 -o "$1" -g "$1" "$2/etc/co2-telemetry/secrets/camera-tokens" /run/credentials/co2-bridge.service/camera-tokens
        exec setpriv --reuid="$1" --regid="$1" --clear-groups "$2/usr/local/bin/co2-bridge" check-config --config "$2/etc/co2-bridge/bridge.toml"'
    check "the installed bridge, as an unprivileged user, reads the route's tokens from $cred" \
        as_service "$creds_then" "$svc_uid" "$root3"
    check_not "... and that user cannot read the root-only original (why LoadCredential= is needed)" \
        setpriv --reuid="$svc_uid" --regid="$svc_uid" --clear-groups cat "$root3/etc/co2-telemetry/secrets/camera-tokens"
fi

# ---- a main mosquitto.conf that opens the broker stops a real run before any change
root2=$work/root2
mkdir -p "$root2/etc/mosquitto"
printf 'listener 1883\nallow_anonymous true\n' >"$root2/etc/mosquitto/mosquitto.conf"
before=$(cd "$root2" && find . | sort)
check_not "a real run refuses a main mosquitto.conf with allow_anonymous/listener" \
    "$ops/install-server.sh" --root "$root2" --bridge-bin "$bridge_bin" --only secrets,mosquitto
check "... and changed nothing" test "$before" == "$(cd "$root2" && find . | sort)"
check_not "a real run refuses a missing bridge binary" "$ops/install-server.sh" --root "$root2" --bridge-bin /nonexistent --only bridge

# ---- the Pi installer
"$ops/add-device.sh" --root "$root" --host mqtt.example.org --sensor scd4x --out "$work/pibundle" "kitchen" >/dev/null 2>&1
pub=$work/stub-co2-publisher
printf '#!/bin/sh\nexit 0\n' >"$pub"
chmod 0755 "$pub"
pir=$work/piroot
mkdir -p "$pir"
"$ops/install-pi.sh" --dry-run --root "$pir" --bundle "$work/pibundle" --publisher-bin "$pub" >"$work/pi-dry.out" 2>&1 && rc=0 || rc=$?
check "install-pi.sh --dry-run prints a plan" bash -c '[[ $1 == 0 ]] && grep -q "^dry run: " "$2"' _ "$rc" "$work/pi-dry.out"
check "install-pi.sh --dry-run changes nothing" test -z "$(ls -A "$pir")"
check "install-pi.sh installs the bundle" "$ops/install-pi.sh" --root "$pir" --bundle "$work/pibundle" --publisher-bin "$pub"
"$ops/install-pi.sh" --root "$pir" --bundle "$work/pibundle" --publisher-bin "$pub" >"$work/pi2.out" 2>&1
check "install-pi.sh second run: 0 changes" grep -qx "done: changes: 0" "$work/pi2.out"
check "the Pi's MQTT password is 0600 root" test "$(stat -c '%a %U' "$pir/etc/co2-publisher/mqtt-password")" == "600 root"
check "the Pi gets the CA and a TLS config" bash -c 'test -s "$1/etc/co2-publisher/ca.crt" && grep -q "^\[mqtt.tls\]" "$1/etc/co2-publisher/publisher.toml"' _ "$pir"
check "the Pi unit is installed" cmp "$ops/systemd/co2-publisher.service" "$pir/etc/systemd/system/co2-publisher.service"
check "install-pi.sh picks I2C for an scd4x sensor" grep -q "sensor interface: i2c" "$pir/../pi2.out"
check_not "install-pi.sh refuses a bundle without a password" \
    bash -c 'mkdir -p "$1/bad" && cp "$2/publisher.toml" "$1/bad/" && "$3" --root "$4" --bundle "$1/bad" --publisher-bin "$5"' \
    _ "$work" "$work/pibundle" "$ops/install-pi.sh" "$pir" "$pub"

rm -f -- "$CHECK_LOG"
printf '%s passed, %s failed, %s skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
[[ $FAILED -eq 0 ]]
