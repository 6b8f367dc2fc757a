#!/usr/bin/env bash
# A/B of two bridge binaries on the same machine, in the same run: rounds
# alternate A and B so that drift of the (shared, noisy) VM hits both alike.
# Each round runs the scenarios below with each binary; the report gives the
# median and range of each figure per binary, and B/A.
#
#   bench/ab.sh A_BIN B_BIN [ROUNDS]        # ROUNDS default 3
#
# Scenarios (co2-bench load, test-owned provisioned broker, throwaway DB):
#   burst   200,000 readings from 100 devices on 10 connections, flat out
#   steady  20,000 readings at 1,000/s (latency)
# Build the two binaries first (e.g. a `git worktree` of the older commit
# with its own CARGO_TARGET_DIR, `cargo build --release -p co2-bridge`).
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?usage: $0 A_BIN B_BIN [ROUNDS]}
b=${2:?usage: $0 A_BIN B_BIN [ROUNDS]}
rounds=${3:-3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p co2-bench >/dev/null 2>&1
bench=$target/release/co2-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # label bin extra...
    local label=$1 bin=$2
    shift 2
    "$bench" load --own-broker provisioned --own-bridge --bridge-bin "$bin" --repo . \
        --devices 100 --connections 10 --json "$@" >"$out/$label.json"
    python3 - "$out/$label.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r = r[0] if isinstance(r, list) else r
lat, br, oth = r.get("latency", {}), r.get("bridge", {}), r.get("others_cpu_s", {})
fig = {
    "rows_per_s": r.get("rows_per_s"), "lost": r.get("lost"), "duplicates": r.get("duplicates"),
    "p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms"),
    "bridge_cpu_ms_per_10k": br.get("cpu_ms_per_10k"), "bridge_peak_rss_mib": br.get("peak_rss_mib"),
    "broker_cpu_s": oth.get("broker"),
}
print(" ".join(f"{k}={v}" for k, v in fig.items() if v is not None))
PY
}

for i in $(seq 1 "$rounds"); do
    for side in A B; do
        bin=$a
        [[ $side == B ]] && bin=$b
        echo "round $i $side burst  $(run "burst-$side-$i" "$bin" --readings 200000)"
        echo "round $i $side steady $(run "steady-$side-$i" "$bin" --readings 20000 --rate 1000)"
    done
done | tee "$out/log"
python3 - "$out/log" <<'PY'
import re, statistics, sys
from collections import defaultdict
data = defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (A|B) (\w+)\s+(.*)", line)
    if not m:
        continue
    side, scen, rest = m.groups()
    for k, v in re.findall(r"(\w+)=([-\d.]+)", rest):
        data[(scen, k, side)].append(float(v))
print(f"{'scenario':8} {'figure':24} {'A median (range)':>26} {'B median (range)':>26} {'B/A':>6}")
for scen, k in sorted({(s, k) for s, k, _ in data}):
    a, b = data.get((scen, k, "A"), []), data.get((scen, k, "B"), [])
    if not a or not b:
        continue
    fa, fb = statistics.median(a), statistics.median(b)
    ratio = f"{fb / fa:.2f}" if fa else "-"
    print(f"{scen:8} {k:24} {fa:>10.1f} ({min(a):.1f}-{max(a):.1f}) {fb:>10.1f} ({min(b):.1f}-{max(b):.1f}) {ratio:>6}")
PY
