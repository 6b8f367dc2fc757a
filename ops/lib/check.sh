# shellcheck shell=bash
# Helpers for ops/checks/5x-*.sh (sourced). Each sub-check prints PASS/FAIL
# and the script ends with the one line `N passed, M failed`.
PASSED=0
FAILED=0
SKIPPED=0
CHECK_LOG=$(mktemp)

pass() {
    PASSED=$((PASSED + 1))
    printf 'PASS  %s\n' "$*"
}

fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL  %s\n' "$*"
}

# skip_check "description": a sub-check that cannot run here (counted, not failed).
skip_check() {
    SKIPPED=$((SKIPPED + 1))
    printf 'SKIP  %s\n' "$*"
}

# check "description" command...: PASS when the command succeeds; on failure
# show the last lines of its output.
check() {
    local what=$1
    shift
    if "$@" >"$CHECK_LOG" 2>&1; then
        pass "$what"
    else
        fail "$what"
        tail -n 25 "$CHECK_LOG" | sed 's/^/      | /'
    fi
}

# check_not "description" command...: PASS when the command fails.
check_not() {
    local what=$1
    shift
    if "$@" >"$CHECK_LOG" 2>&1; then
        fail "$what (it succeeded)"
        tail -n 10 "$CHECK_LOG" | sed 's/^/      | /'
    else
        pass "$what"
    fi
}

finish() {
    rm -f -- "$CHECK_LOG"
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    [[ $FAILED -eq 0 ]]
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Wait until something accepts on HOST:PORT (up to ~10 s).
wait_port() {
    local host=$1 port=$2 _
    for _ in $(seq 1 100); do
        if python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.2).close()' "$host" "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# A short random suffix for test-owned names (databases, users, namespaces).
rand_suffix() { od -An -N4 -tx1 /dev/urandom | tr -d ' \n'; }

# built_bin NAME [COMMAND]: the path of a built co2-bridge or co2-publisher:
# $CO2_BRIDGE_BIN / $CO2_PUBLISHER_BIN (ops/test.sh exports them), else this
# checkout's target/release, else target/debug; with COMMAND, only one whose
# --help lists it. Prints nothing when there is none.
built_bin() {
    local name=$1 want=${2:-} var repo b
    repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
    var=${name^^}
    var=${var//-/_}_BIN
    for b in "${!var:-}" "$repo/target/release/$name" "$repo/target/debug/$name"; do
        [[ -n $b && -x $b ]] || continue
        [[ -z $want ]] || "$b" --help 2>/dev/null | grep -qw -- "$want" || continue
        printf '%s\n' "$b"
        return 0
    done
}
