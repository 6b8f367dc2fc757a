#!/usr/bin/env bash
# Runs every test of the project: services up (ops/services.sh), formatting
# and lints, the Rust test suites (unit, property and integration tests
# against the real MariaDB and Mosquitto), every fuzz target for a bounded
# time (ops/fuzz.sh, FUZZ_SECONDS each), then every check in ops/checks/.
# Exits non-zero if anything failed. At the end, pass or fail, it prints
# where the time went: each phase, and the slowest checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# phase name seconds, in order; check name seconds.
PHASES=()
CHECK_TIMES=()
RUNNING=
timings() {
    local total=$SECONDS
    printf '\n== Where the time went (%d min %02d s in all)\n' $((total / 60)) $((total % 60))
    local entry
    for entry in "${PHASES[@]}"; do
        printf '    %-34s %5d s\n' "${entry% *}" "${entry##* }"
    done
    [[ -z $RUNNING ]] || printf '    %-34s %5d s (failed)\n' "${RUNNING% *}" $((SECONDS - ${RUNNING##* }))
    if ((${#CHECK_TIMES[@]})); then
        echo "    slowest checks:"
        printf '%s\n' "${CHECK_TIMES[@]}" | sort -k2,2nr | head -n 5 |
            while read -r name secs; do printf '      %-32s %5d s\n' "$name" "$secs"; done
    fi
}
trap timings EXIT
# phase "name" command...: runs one phase and records how long it took.
phase() {
    local name=$1 start=$SECONDS
    shift
    echo "== $name"
    RUNNING="$name $start"
    "$@"
    RUNNING=
    PHASES+=("$name $((SECONDS - start))")
}

phase "services (ops/services.sh)" bash ops/services.sh
phase "cargo fmt --check" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests and the checks run the real binaries.
phase "cargo build" cargo build --workspace --bins --locked
# The checks run the binaries just built, wherever CARGO_TARGET_DIR puts them.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export CO2_BRIDGE_BIN=$target_dir/debug/co2-bridge
export CO2_PUBLISHER_BIN=$target_dir/debug/co2-publisher
phase "cargo test" cargo test --workspace --locked
phase "fuzz (${FUZZ_SECONDS:-20} s per target)" bash ops/fuzz.sh

passed=0
failed=0
failures=()
checks_start=$SECONDS
for check in ops/checks/[0-9]*.sh; do
    echo "== $check"
    start=$SECONDS
    if bash "$check"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$check")
    fi
    CHECK_TIMES+=("$(basename "$check" .sh) $((SECONDS - start))")
done
PHASES+=("checks (ops/checks/*.sh) $((SECONDS - checks_start))")
if ((failed)); then
    printf 'failed check: %s\n' "${failures[@]}"
fi
echo "checks: $passed passed, $failed failed"
((failed == 0))
