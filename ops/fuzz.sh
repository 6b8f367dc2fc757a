#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each,
# default 20) on a copy of its committed corpus, and fails if any target
# finds a crash, a broken invariant, a hang or a leak. New inputs it finds
# stay in the temporary copy; the committed corpus changes only by hand
# (`ops/fuzz.sh --merge` folds what a longer run found back in, minimised).
#
# cargo-fuzz builds with `-Zsanitizer=address`, which needs a nightly rustc.
# With a nightly toolchain installed it is used; otherwise the stable one runs
# with RUSTC_BOOTSTRAP=1, which unlocks the same flags (tested with rustc
# 1.95 stable and 1.97 nightly). `cargo install cargo-fuzz` comes from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
merge=0
targets=()
for arg in "$@"; do
    case $arg in
        --merge) merge=1 ;;
        -*) echo "usage: $0 [--merge] [target...]" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cd fuzz && "${fuzz[@]}" list)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fuzz: building ${#targets[@]} targets"
"${fuzz[@]}" build --fuzz-dir fuzz 2>&1 | tail -n 1

failed=()
for target in "${targets[@]}"; do
    mkdir -p "$work/$target" "$work/artifacts/$target"
    echo "== fuzz $target (${seconds}s)"
    # New inputs go to the first (temporary) directory; the committed corpus is read only.
    if ! "${fuzz[@]}" run --fuzz-dir fuzz "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$work/artifacts/$target/" -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        failed+=("$target")
        tail -n 40 "$work/$target.log"
        for crash in "$work/artifacts/$target"/*; do
            [[ -f $crash ]] || continue
            echo "fuzz: $target failed on input (base64): $(base64 -w0 "$crash")"
            echo "fuzz: reproduce: cargo +nightly fuzz run --fuzz-dir fuzz $target <file with that input>"
        done
        continue
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$work/$target.log" | tr '\n' ' '
    echo
    if ((merge)); then
        # Adds only inputs that reach new coverage, into the committed corpus.
        "${fuzz[@]}" run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "$work/$target" -- \
            -merge=1 -max_len=65536 >/dev/null 2>&1
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: failing targets: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no failure"
