#!/usr/bin/env bash
# The bridge's layers stay true: no import cycle between the top-level
# modules of bridge/src (docs/architecture.md), wire/src or publisher/src
# beyond the one the publisher still has (config <-> sensor, listed in
# docs/architecture.md as left to do). Prints each crate's graph.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
repo=$(cd -- "$ops/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 56-module-layers: import cycles between top-level modules"
for crate in bridge wire; do
    python3 "$ops/modgraph.py" "$repo/$crate/src" | sed 's/^/      /'
    check "$crate/src: no import cycle between top-level modules" \
        python3 "$ops/modgraph.py" "$repo/$crate/src" --strict
done
publisher_cycles() {
    python3 "$ops/modgraph.py" "$repo/publisher/src" | grep '^cycle:' || true
}
python3 "$ops/modgraph.py" "$repo/publisher/src" | sed 's/^/      /'
check "publisher/src: no import cycle but config <-> sensor" \
    test "$(publisher_cycles)" == "cycle: config sensor"
finish
