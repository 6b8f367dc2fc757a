#!/usr/bin/env bash
# Add a device (a Pi running co2-publisher) to the broker: a Mosquitto user
# named after the device with a generated password. The ACL (derived from the
# bridge's routes by ops/install-server.sh) lets it publish only on the routes'
# topics with NAME as the device level (co2/NAME/emissions, sensors/NAME/dht11,
# ...), so its readings land under device id NAME. On the device listeners
# the broker uses NAME as the client id too, whatever id the device sends.
#
# Usage: sudo ops/add-device.sh [options] NAME
#   NAME                 device id and MQTT user: 1-64 of [A-Za-z0-9_-]
#   --host HOST          broker address the Pi connects to (default: this host's FQDN)
#   --port PORT          default 8883 (TLS), 1883 with --no-tls
#   --no-tls             plain MQTT (only on a private network or VPN)
#   --ca FILE            CA certificate for the Pi (default /etc/mosquitto/certs/ca.crt)
#   --sensor KIND        mhz19 (default), scd4x, command or simulated
#   --out DIR            where to write the device bundle (default ./co2-device-NAME)
#   --rotate             give an existing device a new password (old one stops working)
#   --remove             delete the device's user (its data stays in the database)
#   --password-file F    Mosquitto password file (default /etc/mosquitto/co2-telemetry.passwd)
#   --shared-topic TOPIC also let it publish to TOPIC, a route's topic without a device
#                        level (e.g. bins/level); repeatable; the device's shared topics
#                        become exactly those given. Such a topic is open to every
#                        device granted it, and the payload names the device: grant
#                        it only to the devices that must use it.
#   --no-shared-topics   revoke every shared topic of the device
#   --acl-file F         the broker's ACL (default /etc/mosquitto/co2-telemetry.acl;
#                        its parts are in F.d/)
#   --bridge-user NAME   the bridge's MQTT user; it and the bridge's client ids
#                        (co2-bridge, co2-bridge-<n>) are refused as device names
#   --root DIR           prefix for the password file and CA paths (tests)
#   --dry-run            print what would be done
#
# The bundle holds publisher.toml, mqtt-password (0600) and ca.crt. Copy it to
# the Pi and run `sudo ops/install-pi.sh --bundle DIR` there. The password is
# not kept on the server (only its PBKDF2 hash): lose the bundle, --rotate.
# The publisher TOML (no secret in it) is also printed on stdout; everything
# else goes to stderr.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

name=
host=
port=
tls=1
ca=/etc/mosquitto/certs/ca.crt
sensor=mhz19
out=
rotate=0
remove=0
passwd_file=/etc/mosquitto/co2-telemetry.passwd
acl_file=/etc/mosquitto/co2-telemetry.acl
shared_given=0
shared_topics=()
bridge_user=co2-bridge
while [[ $# -gt 0 ]]; do
    case $1 in
        --host) host=${2:?}; shift 2 ;;
        --port) port=${2:?}; shift 2 ;;
        --no-tls) tls=0; shift ;;
        --ca) ca=${2:?}; shift 2 ;;
        --sensor) sensor=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --rotate) rotate=1; shift ;;
        --remove) remove=1; shift ;;
        --password-file) passwd_file=${2:?}; shift 2 ;;
        --acl-file) acl_file=${2:?}; shift 2 ;;
        --shared-topic) shared_given=1; shared_topics+=("${2:?}"); shift 2 ;;
        --no-shared-topics) shared_given=1; shift ;;
        --bridge-user) bridge_user=${2:?}; shift 2 ;;
        --root) ROOT=${2:?}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) [[ -z $name ]] || die "one device at a time (got '$name' and '$1')"; name=$1; shift ;;
    esac
done
# Status to stderr; stdout carries only the TOML.
exec 3>&1 1>&2

[[ -n $name ]] || die "which device? usage: $0 [options] NAME (see --help)"
valid_device_name "$name" || die "device name '$name': use 1-64 of [A-Za-z0-9_-] (it becomes the topic level co2/$name/)"
[[ $name != "$bridge_user" ]] || die "'$name' is the bridge's own user; pick another device name"
! is_bridge_client_id "$name" "$bridge_user" ||
    die "'$name' is one of the bridge's client ids (the broker makes a device's user name its client id, so it would disconnect the bridge); pick another device name"
case $sensor in mhz19 | scd4x | command | simulated) ;; *) die "--sensor must be mhz19, scd4x, command or simulated" ;; esac
[[ -n $port ]] || { if [[ $tls == 1 ]]; then port=8883; else port=1883; fi; }
valid_port "$port" || die "--port '$port' is not a TCP port"
[[ -n $host ]] || host=$(hostname -f 2>/dev/null || hostname)
[[ -n $out ]] || out=./co2-device-$name
require_cmd mosquitto_passwd
if [[ $DRY_RUN == 0 ]] && ! is_root && [[ $ROOT == / ]]; then
    die "run as root (sudo $0 ...): it edits $passwd_file"
fi

pf=$(rootpath "$passwd_file")
ca_r=$(rootpath "$ca")
acl_r=$(rootpath "$acl_file")
[[ -f $pf ]] || die "$passwd_file does not exist: run ops/install-server.sh first (it creates it)"
routes_acl=$acl_r.d/00-routes.acl
if [[ $shared_given == 1 ]]; then
    [[ -f $routes_acl ]] || die "$acl_file.d/00-routes.acl does not exist: run ops/install-server.sh first (it derives it from the bridge's routes)"
    for t in "${shared_topics[@]}"; do
        grep -qxF "#shared-topic $t" "$routes_acl" ||
            die "--shared-topic '$t' is not a route's topic without a device level; those are: $(sed -n 's/^#shared-topic //p' "$routes_acl" | tr '\n' ' ')"
    done
fi
mgroup=mosquitto
getent group mosquitto >/dev/null || mgroup=root
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

user_exists() { grep -q "^$1:" -- "$pf"; }

reload_broker() {
    if [[ $ROOT != / ]]; then
        skip "reload mosquitto (--root: send SIGHUP to the test broker yourself)"
    elif have_systemd; then
        run systemctl reload mosquitto
    else
        skip "reload mosquitto: systemd is not running here; send SIGHUP to mosquitto (kill -HUP \$(cat /run/mosquitto/mosquitto.pid))"
    fi
}

# set_shared_topics TOPIC...: the device's part of the ACL (none: no part).
# Returns 0 when the broker's ACL changed (or would).
set_shared_topics() {
    local part=$acl_r.d/device-$name.acl t
    mqtt_acl_stage "$acl_r" "$work/stage"
    rm -f -- "$work/stage/device-$name.acl"
    if [[ $# -gt 0 ]]; then
        {
            printf '# Shared topics of device %s (ops/add-device.sh --shared-topic).\n' "$name"
            printf 'user %s\n' "$name"
            for t in "$@"; do printf 'topic write %s\n' "$t"; done
        } >"$work/stage/device-$name.acl"
    fi
    [[ -d $acl_r.d ]] || die "$acl_file.d does not exist: run ops/install-server.sh first"
    sync_file "$work/stage/device-$name.acl" "$part" root root 0644 || true
    assemble_mqtt_acl "$acl_r" "$mgroup" "$work/stage"
}

step "device $name"
if [[ $remove == 1 ]]; then
    reload=0
    if user_exists "$name"; then
        change "delete MQTT user $name from $passwd_file"
        run mosquitto_passwd -D "$pf" "$name"
        reload=1
    else
        ok "no MQTT user $name"
    fi
    if [[ -e $acl_r.d/device-$name.acl ]]; then
        set_shared_topics && reload=1
    fi
    [[ $reload == 0 ]] || reload_broker
    exit 0
fi
acl_changed=1
if [[ $shared_given == 1 ]]; then
    mapfile -t shared_topics < <(printf '%s\n' "${shared_topics[@]}" | sed '/^$/d' | awk '!seen[$0]++')
    set_shared_topics "${shared_topics[@]}" && acl_changed=0
fi

new_password=0
if user_exists "$name" && [[ $rotate == 0 ]]; then
    ok "MQTT user $name exists; password unchanged (use --rotate for a new one)"
else
    new_password=1
    if user_exists "$name"; then
        change "set a new generated password for MQTT user $name (--rotate)"
    else
        change "add MQTT user $name with a generated password"
    fi
fi
if [[ $tls == 1 && ! -f $ca_r ]]; then
    die "CA certificate $ca not found: run ops/make-certs.sh (or install-server.sh), or pass --ca / --no-tls"
fi

toml=$(
    cat <<EOF
# co2-publisher configuration for device "$name" (made by ops/add-device.sh).
# The password is not in this file: the systemd unit passes it as a credential
# (LoadCredential=mqtt-password:/etc/co2-publisher/mqtt-password).
device = "$name"
interval_ms = 10000

[sensor]
# mhz19 (UART, /dev/serial0), scd4x (I2C, /dev/i2c-1), command or simulated.
kind = "$sensor"

[mqtt]
host = "$host"
port = $port
username = "$name"
qos = 1
EOF
    if [[ $tls == 1 ]]; then
        cat <<'EOF'

[mqtt.tls]
ca_file = "/etc/co2-publisher/ca.crt"
EOF
    fi
    cat <<'EOF'

[queue]
path = "/var/lib/co2-publisher/queue.sqlite3"
EOF
)

if [[ $DRY_RUN == 1 ]]; then
    change "write bundle $out/ (publisher.toml, mqtt-password 0600$([[ $tls == 1 ]] && echo ", ca.crt"))"
    [[ $new_password == 0 ]] || info "          + mosquitto_passwd $pf $name  (password on stdin, not shown)"
    [[ $new_password == 0 && $acl_changed == 1 ]] || reload_broker
    printf '%s\n' "$toml" >&3
    exit 0
fi

(umask 077 && mkdir -p -- "$out")
chmod 0700 -- "$out"
if [[ $new_password == 1 ]]; then
    (
        umask 077
        pw=$(gen_secret)
        # stdin, never argv: the password must not show up in ps or a log.
        printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "$pf" "$name" >/dev/null
        printf '%s\n' "$pw" >"$out/mqtt-password.tmp"
        mv -f -- "$out/mqtt-password.tmp" "$out/mqtt-password"
    )
    info "          + mosquitto_passwd $passwd_file $name  (password on stdin, not shown)"
elif [[ ! -s $out/mqtt-password ]]; then
    warn "$out/mqtt-password is missing and the server keeps only a hash: run again with --rotate to issue a new password"
fi
[[ $new_password == 0 && $acl_changed == 1 ]] || reload_broker
printf '%s\n' "$toml" >"$out/publisher.toml"
chmod 0644 -- "$out/publisher.toml"
if [[ $tls == 1 ]]; then
    install -m 0644 -- "$ca_r" "$out/ca.crt"
fi
[[ ! -f $out/mqtt-password ]] || chmod 0600 -- "$out/mqtt-password"
info "  bundle: $out/ (publisher.toml, mqtt-password$([[ $tls == 1 ]] && echo ", ca.crt"))"
info "  next:   scp -r $out pi@<the-pi>:  then on the Pi: sudo ops/install-pi.sh --bundle ~/$(basename -- "$out")"
printf '%s\n' "$toml" >&3
