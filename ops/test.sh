#!/usr/bin/env bash
# Runs every test of the project: services up (ops/services.sh), formatting
# and lints, the Rust test suites (unit, property and integration tests
# against the real MariaDB and Mosquitto), every fuzz target for a bounded
# time (ops/fuzz.sh, FUZZ_SECONDS each), then every check in ops/checks/.
# Exits non-zero if anything failed; the last line counts the checks.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ops/services.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (the integration tests run the real binaries)"
cargo build --workspace --bins --locked
# The checks run the binaries just built, wherever CARGO_TARGET_DIR puts them.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export CO2_BRIDGE_BIN=$target_dir/debug/co2-bridge
export CO2_PUBLISHER_BIN=$target_dir/debug/co2-publisher
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz (${FUZZ_SECONDS:-20} s per target)"
bash ops/fuzz.sh

passed=0
failed=0
failures=()
for check in ops/checks/[0-9]*.sh; do
    echo "== $check"
    if bash "$check"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$check")
    fi
done
if ((failed)); then
    printf 'failed check: %s\n' "${failures[@]}"
fi
echo "checks: $passed passed, $failed failed"
((failed == 0))
