#!/usr/bin/env bash
# What a cluster costs: the 200,000-reading burst (co2-bench load, own
# bridge, throwaway database) against
#   galera   a 3-node MariaDB Galera cluster (database.hosts = all three)
#   mariadb  one MariaDB with the same settings, wsrep off
#   nats3    a 3-node NATS JetStream cluster with MQTT, streams replicated 3×
#            (mqtt.hosts = all three; devices on node 1)
#   nats1    one NATS node with JetStream and MQTT
# (the database runs use the test-owned provisioned Mosquitto, the broker
# runs one MariaDB), in rounds that alternate the pair so that the drift of
# a shared, noisy VM hits both alike. Prints every run and the median,
# range and ratio of each pair.
#
#   bench/clusters.sh [ROUNDS] [READINGS]      # default 3 rounds of 200000
#   PROFILE=debug bench/clusters.sh ...         # debug binaries (default release)
#
# Everything it starts listens on 127.0.0.1 free ports under a temporary
# directory and is stopped (by its own pid) when it exits. Needs galera-4,
# rsync, nats-server and mariadb-server (ops/services.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
readings=${2:-200000}
target=${CARGO_TARGET_DIR:-target}
profile=${PROFILE:-release}
if [[ $profile == release ]]; then
    cargo build --release --locked -p co2-bench -p co2-bridge >/dev/null 2>&1
else
    cargo build --locked -p co2-bench -p co2-bridge >/dev/null 2>&1
fi
bench=$target/$profile/co2-bench
bridge=$target/$profile/co2-bridge
work=$(mktemp -d /tmp/co2-clusters.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# As root the nodes run as mysql: the rsync daemon that receives a state
# transfer drops root and could not write a root-owned data directory.
run_as=()
[[ $(id -u) == 0 ]] && run_as=(--user=mysql)

# mariadb_node DIR PORT [WSREP-LINES]: a data directory and config.
mariadb_node() {
    local dir=$1 port=$2
    mkdir -p "$dir/data"
    cat >"$dir/my.cnf" <<EOF
[mariadbd]
datadir=$dir/data
socket=$dir/sock
pid-file=$dir/pid
log-error=$dir/error.log
port=$port
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=128M
innodb_flush_log_at_trx_commit=1
binlog_format=ROW
innodb_autoinc_lock_mode=2
${3:-}
EOF
    [[ $(id -u) == 0 ]] && chown -R mysql:mysql "$dir"
    mariadb-install-db --defaults-file="$dir/my.cnf" "${run_as[@]}" >/dev/null 2>&1
}
start_mariadb() { # DIR [ARGS]
    local dir=$1
    shift
    mariadbd --defaults-file="$dir/my.cnf" "${run_as[@]}" "$@" >>"$dir/stdout.log" 2>&1 &
    pids+=($!)
}
wait_sql() { # DIR
    for _ in $(seq 1 300); do
        mariadb --socket="$1/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "mariadbd in $1 did not start; see $1/error.log" >&2
    exit 1
}
account() { # DIR
    mariadb --socket="$1/sock" -uroot -e "CREATE USER 'co2b'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'co2b'@'127.0.0.1' WITH GRANT OPTION;"
}

echo "starting: 3-node Galera, one MariaDB, 3-node NATS, one NATS (under $work)"
declare -a gport gcomm
for n in 0 1 2; do gport[n]=$(free_port); gcomm[n]=$(free_port); done
cluster_address="gcomm://127.0.0.1:${gcomm[0]},127.0.0.1:${gcomm[1]},127.0.0.1:${gcomm[2]}"
for n in 0 1 2; do
    mariadb_node "$work/galera$n" "${gport[n]}" "wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name=co2bench
wsrep_node_address=127.0.0.1:${gcomm[n]}
wsrep_cluster_address=$cluster_address
wsrep_provider_options=\"gmcast.listen_addr=tcp://127.0.0.1:${gcomm[n]};ist.recv_addr=127.0.0.1:$(free_port)\"
wsrep_sst_receive_address=127.0.0.1:$(free_port)
wsrep_sst_method=rsync"
done
start_mariadb "$work/galera0" --wsrep-new-cluster
wait_sql "$work/galera0"
account "$work/galera0"
start_mariadb "$work/galera1"
start_mariadb "$work/galera2"
single_port=$(free_port)
mariadb_node "$work/single" "$single_port"
start_mariadb "$work/single"
wait_sql "$work/single"
account "$work/single"
for n in 1 2; do wait_sql "$work/galera$n"; done
for _ in $(seq 1 300); do
    size=$(mariadb --socket="$work/galera0/sock" -uroot -N -e "SHOW STATUS LIKE 'wsrep_cluster_size'" | awk '{print $2}')
    [[ $size == 3 ]] && break
    sleep 0.2
done
[[ $size == 3 ]] || { echo "Galera cluster size $size, not 3" >&2; exit 1; }

declare -a nmqtt nroute
for n in 0 1 2; do nmqtt[n]=$(free_port); nroute[n]=$(free_port); done
routes="nats://127.0.0.1:${nroute[0]}, nats://127.0.0.1:${nroute[1]}, nats://127.0.0.1:${nroute[2]}"
nats_node() { # NAME MQTT-PORT REPLICAS [CLUSTER-BLOCK]
    cat >"$work/$1.conf" <<EOF
server_name: $1
listen: 127.0.0.1:$(free_port)
jetstream { store_dir: "$work/$1-js" }
mqtt { listen: 127.0.0.1:$2
  stream_replicas: $3
}
${4:-}
EOF
    nats-server -c "$work/$1.conf" >>"$work/$1.log" 2>&1 &
    pids+=($!)
}
for n in 0 1 2; do
    nats_node "nats$n" "${nmqtt[n]}" 3 "cluster { name: co2bench
  listen: 127.0.0.1:${nroute[n]}
  routes: [$routes]
}"
done
nats1_port=$(free_port)
nats_node nats-single "$nats1_port" 1
sleep 8

log=$work/log
run() { # LABEL ARGS...
    local label=$1
    shift
    "$bench" load --own-bridge --bridge-bin "$bridge" --repo . --devices 100 --connections 10 \
        --readings "$readings" --json "$@" >"$work/$label.json" 2>>"$work/bench.log" || true
    python3 - "$work/$label.json" "$label" <<'PY' | tee -a "$log"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"{sys.argv[2]} failed"); sys.exit(0)
r = r[0] if isinstance(r, list) else r
print(f"{sys.argv[2]} rows_per_s={r.get('rows_per_s')} lost={r.get('lost')} duplicates={r.get('duplicates')}")
PY
}
galera_hosts="127.0.0.1:${gport[0]},127.0.0.1:${gport[1]},127.0.0.1:${gport[2]}"
nats_hosts="127.0.0.1:${nmqtt[0]},127.0.0.1:${nmqtt[1]},127.0.0.1:${nmqtt[2]}"
for i in $(seq 1 "$rounds"); do
    run "galera-$i" --own-broker provisioned --db-url "mysql://co2b@127.0.0.1:${gport[0]}/co2" \
        --bridge-env "CO2_BRIDGE__DATABASE__HOSTS=$galera_hosts"
    run "mariadb-$i" --own-broker provisioned --db-url "mysql://co2b@127.0.0.1:$single_port/co2"
    run "nats3-$i" --mqtt-port "${nmqtt[1]}" --db-url "mysql://co2b@127.0.0.1:$single_port/co2" \
        --bridge-env CO2_BRIDGE__MQTT__PROTOCOL=v311 --bridge-env "CO2_BRIDGE__MQTT__HOSTS=$nats_hosts"
    run "nats1-$i" --mqtt-port "$nats1_port" --db-url "mysql://co2b@127.0.0.1:$single_port/co2" \
        --bridge-env CO2_BRIDGE__MQTT__PROTOCOL=v311
done
python3 - "$log" <<'PY'
import re, statistics, sys
from collections import defaultdict
rate = defaultdict(list)
bad = defaultdict(int)
for line in open(sys.argv[1]):
    m = re.match(r"(\w+)-\d+ rows_per_s=([\d.]+) lost=(\d+) duplicates=(\d+)", line)
    if m:
        rate[m[1]].append(float(m[2]))
        bad[m[1]] += int(m[3]) + int(m[4])
def fig(k):
    v = rate.get(k, [])
    return (statistics.median(v), min(v), max(v)) if v else None
for a, b in (("galera", "mariadb"), ("nats3", "nats1")):
    fa, fb = fig(a), fig(b)
    if not fa or not fb:
        print(f"{a} vs {b}: incomplete"); continue
    print(f"{a:7} {fa[0]:>9.0f} rows/s ({fa[1]:.0f}-{fa[2]:.0f}), lost+duplicated {bad[a]}")
    print(f"{b:7} {fb[0]:>9.0f} rows/s ({fb[1]:.0f}-{fb[2]:.0f}), lost+duplicated {bad[b]}")
    print(f"{a}/{b} = {fa[0] / fb[0]:.2f}")
PY
