#!/usr/bin/env bash
# The layers stay true: no import cycle between the top-level
# modules of bridge/src (docs/architecture.md), wire/src or publisher/src.
# Prints each crate's graph.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ops=$(cd -- "$here/.." && pwd)
repo=$(cd -- "$ops/.." && pwd)
# shellcheck source=../lib/check.sh
source "$ops/lib/check.sh"

echo "== 56-module-layers: import cycles between top-level modules"
for crate in bridge wire publisher; do
    python3 "$ops/modgraph.py" "$repo/$crate/src" | sed 's/^/      /'
    check "$crate/src: no import cycle between top-level modules" \
        python3 "$ops/modgraph.py" "$repo/$crate/src" --strict
done
finish
