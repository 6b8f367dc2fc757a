#!/usr/bin/env bash
# ops/run-local.sh as a newcomer runs it: in a fresh copy of the repository
# (the tracked files only: no out/, no target/, no state of an earlier run),
# against the services already running, beside anything else on the machine
# (its own port, database, accounts, topic prefix and state directory). It
# uses the binaries ops/test.sh built instead of a release build of its own.
# The status page's URL comes first, every column of the live table is filled
# with numbers, readings flow and reach the status page, the closing lines say
# how many were published and how many are rows and how to stop, and the
# output stays short (no configuration dump, no build or setup chatter).
# Then a second run on the same state: what a returning user sees.
# About 40 s.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

BRIDGE=${CO2_BRIDGE_BIN:-target/debug/co2-bridge}
BIN_DIR=$(dirname "$BRIDGE")
[[ -x $BIN_DIR/co2-bridge && -x $BIN_DIR/co2-publisher ]] || {
    echo "FAIL - $BIN_DIR has no co2-bridge and co2-publisher: run cargo build --workspace --bins"
    echo "0 passed, 1 failed"
    exit 1
}

db="co2chk_rl_$$"
user="co2chk_rl$$"
prefix="chkrl$$"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
state=$(mktemp -d)
clone=$(mktemp -d)
cleanup() {
    (cd "$clone" && bash ops/run-local.sh --stop --state "$state" >/dev/null 2>&1) || true
    rm -rf "$clone"
    mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`;
        DROP USER IF EXISTS '$user'@'127.0.0.1'; DROP USER IF EXISTS '${user}_grafana'@'127.0.0.1'" || true
    rm -rf "$state"
}
trap cleanup EXIT

# A fresh clone, with whatever the working tree changed in tracked files.
git ls-files -z | tar --null --no-recursion --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$clone"
BIN_DIR=$(cd "$BIN_DIR" && pwd)
run() {
    (cd "$clone" && bash ops/run-local.sh --demo-seconds 8 --http "127.0.0.1:$port" --state "$state" \
        --database "$db" --db-user "$user" --prefix "$prefix" --bin-dir "$BIN_DIR")
}
out=$state/run-local.out
rc=0
run >"$out" 2>&1 || rc=$?
check "run-local.sh succeeds" test "$rc" -eq 0
[[ $rc -eq 0 ]] || tail -n 30 "$out" | sed 's/^/       | /'

check "the first line is the status page's URL" \
    grep -qx "Status page: http://127.0.0.1:$port/ .*" <(head -n 1 "$out")
check "the status page answers" curl -sf -o /dev/null "http://127.0.0.1:$port/"

# The live table: the lines after its header, up to the next blank line.
table=$(awk '/^ +secs +published +rows +written +rows\/s +rejects$/ { on = 1; next } on && NF == 0 { exit } on' "$out")
check "the live table has rows" test "$(printf '%s\n' "$table" | grep -c .)" -ge 2
filled() {
    printf '%s\n' "$table" | awk '
        NF != 6 { print "not 6 columns: " $0; bad = 1; next }
        { for (i = 1; i <= 6; i++) if ($i !~ /^[0-9]+$/) { print "column " i " is not a number: " $0; bad = 1 } }
        END { exit bad }'
}
check "every column of every row is a number" filled
last=$(printf '%s\n' "$table" | tail -n 1)
read -r _ published rows written _ rejects <<<"$last"
check "readings were published ($published)" test "${published:-0}" -gt 0
check "rows arrived ($rows)" test "${rows:-0}" -gt 0
check "the written column counts them ($written, rows $rows)" test "${written:-0}" -gt 0
check "the malformed message is counted as a reject ($rejects)" test "${rejects:-0}" -ge 1
check "it says how many were published and how many are rows" \
    grep -qE '^== Published [0-9]+ readings \(acknowledged by the broker\); [0-9]+ are new rows in co2_emissions$' "$out"
check "every published reading is a row" grep -q 'every published reading is a row' "$out"

# What reached the status page: the three demo devices with a latest value.
devices_on_page() {
    curl -sf "http://127.0.0.1:$port/status.json" | python3 -c '
import json, sys
rows = {d["device"]: d["latest"] for d in json.load(sys.stdin)["devices"]}
want = {"pi-kitchen", "pi-office", "pi-lab"}
missing = want - rows.keys()
sys.exit(f"not on the status page: {sorted(missing)} (it lists {sorted(rows)})" if missing else 0)'
}
check "the status page lists the three demo devices" devices_on_page
check "it says when the demo was live" grep -qE '^    live after [0-9]+ s: readings are landing' "$out"
check "it says how to stop" grep -qF "ops/run-local.sh --stop --state $state" "$out"
check "the effective configuration is a link, not a dump" grep -qF "http://127.0.0.1:$port/#config" "$out"
no_dump() { ! grep -nE '^\s*\[(mqtt|database|http|wire)\]|(password|token)(_file)? *=|Compiling|^services: |Applying|migration' "$state/run-local.out"; }
check "no configuration, build or setup chatter in the output" no_dump
lines=$(wc -l <"$out")
check "the whole output is short ($lines lines, at most 60)" test "$lines" -le 60

# A returning user: the same command again on the same state.
out2=$state/run-local-2.out
rc=0
run >"$out2" 2>&1 || rc=$?
check "a second run succeeds" test "$rc" -eq 0
[[ $rc -eq 0 ]] || tail -n 30 "$out2" | sed 's/^/       | /'
check "a second run stores every published reading too" grep -q 'every published reading is a row' "$out2"
finish
