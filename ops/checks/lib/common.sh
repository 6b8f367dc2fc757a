# shellcheck shell=bash
# Shared helpers of the observability checks (ops/checks/3x-*.sh). Source it:
#   . "$(dirname "$0")/lib/common.sh"
# Each check counts its sub-checks with `check` / `run_counted` and ends with
# `finish`, which prints exactly "N passed, M failed" and sets the exit status.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CHECKS_LIB="$REPO_ROOT/ops/checks/lib"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/co2-telemetry"
PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }

# check "description" command args...: one sub-check, passes when the command does.
check() {
    local desc="$1"
    shift
    local out
    if out="$("$@" 2>&1)"; then
        pass "$desc"
    else
        fail "$desc"
        printf '%s\n' "$out" | sed 's/^/       /'
    fi
}

# run_counted command args...: runs a helper that prints its own "ok"/"FAIL"
# lines and ends with "N passed, M failed"; adds its counts to ours. A helper
# that dies without that line counts as one failure.
run_counted() {
    local out rc=0 last
    out="$("$@" 2>&1)" || rc=$?
    printf '%s\n' "$out" | grep -v -E '^[0-9]+ passed, [0-9]+ failed$' || true
    last="$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1 || true)"
    if [[ -z "$last" ]]; then
        fail "$* (exit $rc, no summary line)"
        return 0
    fi
    local p f
    p="${last%% passed*}"
    f="${last#*, }"
    f="${f%% failed*}"
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [[ $rc -ne 0 && $f -eq 0 ]]; then
        fail "$* exited $rc"
    fi
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 ]]
}

# need_cmd CMD DEBIAN_PACKAGE: installs the package when CMD is missing.
need_cmd() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "installing $2 (for $1)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1; then
            apt-get update >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null
        fi
    fi
}

# check_python: prints the path of a python with the pinned check packages
# (ops/checks/lib/requirements.txt), in a venv under the cache dir.
check_python() {
    local req="$CHECKS_LIB/requirements.txt"
    local venv="$CACHE_DIR/venv-checks"
    local stamp="$venv/.requirements"
    if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$req" "$stamp"; then
        mkdir -p "$CACHE_DIR"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
        cp "$req" "$stamp"
    fi
    echo "$venv/bin/python"
}

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
