#!/usr/bin/env bash
# Runs the whole benchmark suite that BENCHMARKS.md reports: builds the bridge
# and co2-bench in release mode, then `co2-bench all`, which starts its own
# test-owned Mosquittos (stock and provisioned) on free 127.0.0.1 ports and
# throwaway databases on the local MariaDB (root@127.0.0.1:3306, or
# CO2_BENCH_DB_URL). Takes about 10 minutes on 2 cores. Not part of ops/test.sh.
#
#   bench/run.sh                     # table on stdout, JSON in bench-results.json
#   bench/run.sh --repeat 1 --only burst,db
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p co2-bridge -p co2-bench
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/co2-bench" all --repo . --bridge-bin "$target/release/co2-bridge" \
    --out "${BENCH_OUT:-bench-results.json}" "$@"
