#!/usr/bin/env bash
# Instructions per reading for the bridge's decode → batch → row-building
# path (co2_bridge::offline, run by the co2-pipeline-cost binary): no broker,
# no database, a fixed input, counted by valgrind's callgrind. Unlike time,
# the count repeats exactly for the same binary whatever else the machine is
# doing, so two commits compare on a busy VM.
#
#   bench/callgrind.sh [READINGS]       # default 20000
#
# Only instructions inside `Offline::run` count (--toggle-collect): making
# the input (formatting the payloads) is not the bridge's work. Each kind
# (co2: `datetime|emissions`; json: the DHT11 producer's string-valued JSON)
# runs with READINGS and with READINGS/10 readings; the difference over the
# difference in readings is the cost per reading. For where it goes:
# callgrind_annotate --inclusive=yes on a kept output file.
set -euo pipefail
cd "$(dirname "$0")/.."
readings=${1:-20000}
small=$((readings / 10))
cargo build --release --locked -p co2-bench --bin co2-pipeline-cost >/dev/null 2>&1
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/release/co2-pipeline-cost
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

count() { # kind readings
    valgrind --tool=callgrind --toggle-collect='*offline*Offline*run*' --callgrind-out-file="$out/cg.$1.$2" "$bin" --kind "$1" --readings "$2" >/dev/null 2>"$out/log.$1.$2"
    awk '/^summary:/ {print $2}' "$out/cg.$1.$2"
}

printf '%-5s %12s %12s %14s\n' kind "I($small)" "I($readings)" "instr/reading"
for kind in co2 json; do
    a=$(count "$kind" "$small")
    b=$(count "$kind" "$readings")
    per=$(python3 -c "print(f'{($b - $a) / ($readings - $small):.0f}')")
    printf '%-5s %12s %12s %14s\n' "$kind" "$a" "$b" "$per"
done
