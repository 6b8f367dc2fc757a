#!/usr/bin/env bash
# Static checks of everything under ops/ (and provisioning/ scripts):
# `bash -n` and shellcheck on every *.sh (the lead's and other helpers'
# included), the Python helpers compile, and `systemd-analyze verify` plus an
# offline `systemd-analyze security` score on every unit in ops/systemd/.
# The units are verified in a temp root holding a stub for each ExecStart
# binary (verify insists the binary exists) and a copy of the distribution's
# units (for the dependencies). When a binary is built, the environment names
# the units set are fed to `check-config` to prove the program reads them.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
repo=$(cd -- "$ops/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 50-ops-lint: shell scripts and systemd units"
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

mapfile -t scripts < <(cd "$repo" && find ops provisioning -name '*.sh' -type f | sort)
for f in "${scripts[@]}"; do
    check "bash -n $f" bash -n "$repo/$f"
done
if command -v shellcheck >/dev/null; then
    for f in "${scripts[@]}"; do
        # -x: follow `source` (ops/.shellcheckrc resolves paths from each script's directory).
        # shellcheck disable=SC2016 # $1/$2 belong to the inner script
        check "shellcheck $f" bash -c 'cd "$1" && shellcheck -x "$2"' _ "$repo" "$f"
    done
else
    fail "shellcheck is not installed (apt-get install shellcheck)"
fi
for f in $(cd "$repo" && find ops -name '*.py' -type f | sort); do
    check "python3 compiles $f" python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$repo/$f"
done

if ! command -v systemd-analyze >/dev/null; then
    fail "systemd-analyze is not installed (apt-get install systemd)"
    finish
fi
root=$work/root
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
# A copy (not a link: systemd resolves the relative links inside it against the root).
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/system"
units=()
for u in "$ops"/systemd/*.service; do
    name=${u##*/}
    units+=("$name")
    cp "$u" "$root/etc/systemd/system/$name"
    while read -r bin; do
        mkdir -p "$root$(dirname "$bin")"
        printf '#!/bin/sh\nexit 0\n' >"$root$bin"
        chmod 0755 "$root$bin"
    done < <(sed -n 's/^Exec[A-Za-z]*=[-@+!:]*\([^ ]*\).*/\1/p' "$u" | sort -u)
done
for name in "${units[@]}"; do
    systemd-analyze verify --root="$root" "$name" >"$work/verify.out" 2>&1 && rc=0 || rc=$?
    if [[ $rc == 0 && ! -s $work/verify.out ]]; then
        pass "systemd-analyze verify $name (no warnings)"
    else
        fail "systemd-analyze verify $name (rc $rc)"
        sed 's/^/      | /' "$work/verify.out"
    fi
    systemd-analyze security --offline=yes --root="$root" --threshold=25 "$name" 2>/dev/null >"$work/sec.out" && rc=0 || rc=$?
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$work/sec.out")
    check "systemd-analyze security $name: exposure ${score:-?} (<= 2.5 wanted)" test "$rc" == 0
    for k in "Restart=on-failure" "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" \
        "CapabilityBoundingSet=" "SystemCallFilter=@system-service" "DynamicUser=yes"; do
        check "$name sets $k" grep -qx "$k" "$ops/systemd/$name"
    done
done
check "co2-publisher.service keeps its queue in StateDirectory=co2-publisher" grep -qx "StateDirectory=co2-publisher" "$ops/systemd/co2-publisher.service"
check "co2-publisher.service reaches only the sensor devices" grep -qx "DevicePolicy=closed" "$ops/systemd/co2-publisher.service"

# Sanity: verify really rejects a broken unit here (so the passes above mean something).
cp "$root/etc/systemd/system/co2-bridge.service" "$root/etc/systemd/system/co2-broken.service"
sed -i 's/^NoNewPrivileges=yes/NoNewPrivilegez=yes/; s|^ExecStart=/usr/local/bin/co2-bridge|ExecStart=/usr/local/bin/co2-missing|' \
    "$root/etc/systemd/system/co2-broken.service"
systemd-analyze verify --root="$root" co2-broken.service >"$work/broken.out" 2>&1 || true
# shellcheck disable=SC2016
check "verify flags a misspelt key and a missing binary in a broken copy" \
    bash -c 'grep -q "Unknown key" "$1" && grep -q "co2-missing" "$1"' _ "$work/broken.out"
rm -f "$root/etc/systemd/system/co2-broken.service"

# The environment the units set must be what the programs read.
unit_env() { # unit -> KEY=VALUE lines with %d pointing at a fake credentials dir
    sed -n 's/^Environment=//p' "$ops/systemd/$1" | sed "s|%d|$work/creds|g"
}
mkdir -p "$work/creds"
printf 'x\n' >"$work/creds/db-password"
printf 'x\n' >"$work/creds/mqtt-password"
bridge_bin=$(built_bin co2-bridge)
if [[ -n $bridge_bin ]]; then
    mapfile -t envs < <(unit_env co2-bridge.service)
    sed -e 's/@BRIDGE_PORT@/1884/; s/@MQTT_USER@/co2-bridge/; s/@DB_USER@/co2_bridge/; s/@DB_HOST@/127.0.0.1/' \
        -e 's/@DB_PORT@/3306/; s/@DB_NAME@/co2/; s/@DEVICE_LISTEN_LINE@/device_listen = "127.0.0.1:9465"/' "$ops/config/bridge.toml.in" >"$work/bridge.toml"
    env "${envs[@]}" "$bridge_bin" check-config --config "$work/bridge.toml" >"$work/cc.out" 2>&1 || true
    check "co2-bridge check-config accepts the installed bridge.toml" grep -q '^\[database\]' "$work/cc.out"
    check "co2-bridge reads the unit's CO2_BRIDGE__DATABASE__PASSWORD_FILE" grep -q "password_file = \"$work/creds/db-password\"" "$work/cc.out"
    check "co2-bridge reads the unit's CO2_BRIDGE__MQTT__PASSWORD_FILE" grep -q "password_file = \"$work/creds/mqtt-password\"" "$work/cc.out"
else
    skip_check "co2-bridge not built: unit environment names not fed to check-config"
fi
pub_bin=$(built_bin co2-publisher)
if [[ -n $pub_bin ]] && "$pub_bin" --help 2>/dev/null | grep -q check-config; then
    mapfile -t envs < <(unit_env co2-publisher.service)
    cat >"$work/publisher.toml" <<'EOF'
device = "check-pi"
interval_ms = 10000

[sensor]
kind = "simulated"

[mqtt]
host = "127.0.0.1"
port = 8883
username = "check-pi"
qos = 1

[queue]
path = "/var/lib/co2-publisher/queue.sqlite3"
EOF
    env "${envs[@]}" "$pub_bin" check-config --config "$work/publisher.toml" >"$work/pc.out" 2>&1 && rc=0 || rc=$?
    check "co2-publisher check-config accepts the add-device.sh TOML shape" test "$rc" == 0
    check "co2-publisher reads the unit's CO2_PUBLISHER__MQTT__PASSWORD_FILE" grep -q "$work/creds/mqtt-password" "$work/pc.out"
else
    skip_check "co2-publisher not built (or no check-config yet): unit environment names not fed to it"
fi

rm -f -- "$CHECK_LOG"
printf '%s passed, %s failed, %s skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
[[ $FAILED -eq 0 ]]
