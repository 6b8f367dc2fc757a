#!/usr/bin/env bash
# Install or upgrade co2-publisher on a Raspberry Pi (Raspberry Pi OS /
# Debian): binary, config, MQTT credential, CA certificate, the sensor's
# interface (UART for MH-Z19, I2C for SCD4x) and the systemd unit.
# Idempotent: a second run reports "changes: 0".
#
# Usage: sudo ops/install-pi.sh --bundle DIR [options]
#   --bundle DIR          made on the server by `ops/add-device.sh NAME`:
#                         publisher.toml, mqtt-password, ca.crt (TLS)
#   --publisher-bin PATH  the co2-publisher binary for this Pi (default:
#                         target/release/co2-publisher of this checkout;
#                         `cargo build --release -p co2-publisher` on the Pi,
#                         or cross-build for aarch64/armv7, see ops/README.md)
#   --interface auto|uart|i2c|none   enable the sensor's bus (default auto:
#                         from [sensor] kind: mhz19 -> uart, scd4x -> i2c)
#   --root DIR            install files under DIR (tests): no bus setup, no services
#   --dry-run             print the plan, change nothing
#
# Bus setup uses `raspi-config nonint` when present:
#   UART: do_serial_hw 0 (serial port on), do_serial_cons 1 (no login console on it)
#   I2C:  do_i2c 0
# otherwise it edits config.txt (/boot/firmware/config.txt, or /boot/config.txt):
#   enable_uart=1            and removes console=serial0,... from cmdline.txt
#   dtparam=i2c_arm=on
# Either needs a reboot, which the script says and does not do.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

bundle=
bin=$repo/target/release/co2-publisher
interface=auto
while [[ $# -gt 0 ]]; do
    case $1 in
        --bundle) bundle=${2:?}; shift 2 ;;
        --publisher-bin) bin=${2:?}; shift 2 ;;
        --interface) interface=${2:?}; shift 2 ;;
        --root) ROOT=${2:?}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
case $interface in auto | uart | i2c | none) ;; *) die "--interface must be auto, uart, i2c or none" ;; esac
[[ -n $bundle ]] || die "--bundle DIR is required (make one on the server: sudo ops/add-device.sh NAME)"
[[ -f $bundle/publisher.toml ]] || die "$bundle/publisher.toml not found: is $bundle a bundle from ops/add-device.sh?"
[[ -s $bundle/mqtt-password ]] || die "$bundle/mqtt-password missing: on the server run ops/add-device.sh --rotate NAME for a new one"
tls=0
grep -q '^\[mqtt\.tls\]' "$bundle/publisher.toml" && tls=1
[[ $tls == 0 || -s $bundle/ca.crt ]] || die "$bundle/publisher.toml uses TLS but $bundle/ca.crt is missing (copy /etc/mosquitto/certs/ca.crt from the server)"
[[ -x $bin ]] || die "no co2-publisher binary at $bin: build it (cargo build --release -p co2-publisher) or pass --publisher-bin PATH"
if [[ $ROOT == / && $DRY_RUN == 0 ]] && ! is_root; then
    die "run as root: sudo $0 $*"
fi
[[ $ROOT == / ]] || ROOT=$(cd -- "$ROOT" && pwd)
r() { rootpath "$1"; }

kind=$(sed -n 's/^[[:space:]]*kind[[:space:]]*=[[:space:]]*"\([a-z0-9_-]*\)".*/\1/p' "$bundle/publisher.toml" | head -n 1)
if [[ $interface == auto ]]; then
    case $kind in mhz19) interface=uart ;; scd4x) interface=i2c ;; *) interface=none ;; esac
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
restart=0
units_changed=0
reboot_needed=0

step "co2-publisher files"
ensure_file "$bin" "$(r /usr/local/bin/co2-publisher)" root root 0755 && restart=1
ensure_dir "$(r /etc/co2-publisher)" root root 0755
ensure_file "$bundle/publisher.toml" "$(r /etc/co2-publisher/publisher.toml)" root root 0644 && restart=1
# The credential: root-only; systemd hands it to the service (LoadCredential).
ensure_file "$bundle/mqtt-password" "$(r /etc/co2-publisher/mqtt-password)" root root 0600 && restart=1
if [[ $tls == 1 ]]; then
    ensure_file "$bundle/ca.crt" "$(r /etc/co2-publisher/ca.crt)" root root 0644 && restart=1
fi
unit_src=$here/systemd/co2-publisher.service
sd_version=$(systemctl --version 2>/dev/null | awk 'NR==1{print $2}' || true)
if [[ -n $sd_version && $sd_version =~ ^[0-9]+$ && $sd_version -lt 248 ]]; then
    # %d (the credentials directory) arrived in systemd 248 (Raspberry Pi OS
    # bullseye has 247); the directory itself is /run/credentials/<unit>.
    sed 's|%d/|/run/credentials/%n/|g' "$unit_src" >"$tmp/co2-publisher.service"
    unit_src=$tmp/co2-publisher.service
fi
if ensure_file "$unit_src" "$(r /etc/systemd/system/co2-publisher.service)" root root 0644; then
    restart=1
    units_changed=1
fi

step "sensor interface: $interface (sensor kind: ${kind:-unknown})"
# The unit names both groups (SupplementaryGroups=dialout i2c); systemd
# refuses to start it if one does not exist.
for g in dialout i2c; do
    if [[ $ROOT != / ]]; then
        skip "group $g (--root)"
    elif getent group "$g" >/dev/null; then
        ok "group $g exists"
    else
        change "create system group $g"
        run groupadd --system "$g"
    fi
done

boot_file() { # config.txt or cmdline.txt: bookworm moved them to /boot/firmware
    if [[ -f /boot/firmware/$1 ]]; then echo "/boot/firmware/$1"; else echo "/boot/$1"; fi
}
ensure_line() { # FILE LINE
    if grep -qxF -- "$2" "$1" 2>/dev/null; then
        ok "$1 has '$2'"
    else
        change "add '$2' to $1"
        [[ $DRY_RUN == 1 ]] || printf '%s\n' "$2" >>"$1"
        reboot_needed=1
    fi
}
if [[ $interface == none ]]; then
    skip "no bus to enable for sensor kind '${kind:-unknown}'"
elif [[ $ROOT != / ]]; then
    skip "bus setup (--root)"
elif command -v raspi-config >/dev/null 2>&1; then
    if [[ $interface == uart ]]; then
        # raspi-config's get_* print 0 for "enabled".
        if [[ $(raspi-config nonint get_serial_hw 2>/dev/null || echo 1) == 0 ]]; then
            ok "serial port enabled"
        else
            change "enable the serial port"
            run raspi-config nonint do_serial_hw 0
            reboot_needed=1
        fi
        if [[ $(raspi-config nonint get_serial_cons 2>/dev/null || echo 0) == 1 ]]; then
            ok "no login console on the serial port"
        else
            change "disable the login console on the serial port (the sensor needs it)"
            run raspi-config nonint do_serial_cons 1
            reboot_needed=1
        fi
    else
        if [[ $(raspi-config nonint get_i2c 2>/dev/null || echo 1) == 0 ]]; then
            ok "I2C enabled"
        else
            change "enable I2C"
            run raspi-config nonint do_i2c 0
            reboot_needed=1
        fi
    fi
else
    cfg=$(boot_file config.txt)
    [[ -f $cfg ]] || die "neither raspi-config nor $cfg found: enable the $interface bus by hand (see ops/README.md) and run again with --interface none"
    if [[ $interface == uart ]]; then
        ensure_line "$cfg" "enable_uart=1"
        cmdline=$(boot_file cmdline.txt)
        if [[ -f $cmdline ]] && grep -qE 'console=(serial0|ttyAMA0|ttyS0),[0-9]+ ?' "$cmdline"; then
            change "remove the serial console from $cmdline"
            run sed -i -E 's/console=(serial0|ttyAMA0|ttyS0),[0-9]+ ?//g' "$cmdline"
            reboot_needed=1
        else
            ok "no serial console in $cmdline"
        fi
    else
        ensure_line "$cfg" "dtparam=i2c_arm=on"
    fi
fi

step "service"
if [[ $ROOT != / ]]; then
    skip "systemctl (--root)"
elif ! have_systemd; then
    skip "systemd is not running on this machine (PID 1 is '$(pid1_name)'): run 'systemctl daemon-reload; systemctl enable --now co2-publisher' on the Pi"
else
    [[ $units_changed == 0 ]] || run systemctl daemon-reload
    if systemctl is-enabled --quiet co2-publisher 2>/dev/null && systemctl is-active --quiet co2-publisher; then
        ok "co2-publisher enabled and running"
        if [[ $restart == 1 ]]; then
            change "restart co2-publisher (binary, config or credential changed)"
            run systemctl restart co2-publisher
        fi
    else
        change "enable and start co2-publisher"
        run systemctl enable --now co2-publisher
    fi
fi
if [[ $(timedatectl show -p NTPSynchronized --value 2>/dev/null || echo unknown) == no ]]; then
    warn "the clock is not synchronised yet: the publisher waits for it before stamping readings (timedatectl status)"
fi

printf '\n'
if [[ $DRY_RUN == 1 ]]; then
    info "dry run: $CHANGES change(s) planned, nothing was changed"
else
    info "done: changes: $CHANGES"
fi
if [[ $reboot_needed == 1 ]]; then
    info "REBOOT NEEDED for the $interface change: sudo reboot (the service starts by itself afterwards)"
fi
info "logs: journalctl -u co2-publisher -f"
