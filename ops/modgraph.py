#!/usr/bin/env python3
"""The import graph between the top-level modules of a Rust crate's src/.

    ops/modgraph.py CRATE/src [--max-lines N] [--strict]

Reads every `crate::<module>` path in each file's code (before its first
`#[cfg(test)]`; doc links count, since rustdoc follows them too) and prints,
per top-level module, the modules it imports; then every import cycle (a
set of modules that reach each other) and every file with more than N lines
of code (default 500; blank and comment lines do not count). With --strict
it exits 1 when there is a cycle. The last line is a summary:
`cycles=C long_files=L`.
"""
import os
import re
import sys

PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def top_modules(src):
    tops = set()
    for entry in os.listdir(src):
        if entry in ("lib.rs", "main.rs"):
            continue
        if entry.endswith(".rs"):
            tops.add(entry[:-3])
        elif os.path.isdir(os.path.join(src, entry)):
            tops.add(entry)
    return tops


def read_graph(src, max_lines):
    tops = top_modules(src)
    edges = {t: set() for t in tops}
    long_files = []
    for root, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            with open(path, encoding="utf-8", errors="replace") as f:
                code = f.read().split("#[cfg(test)]")[0]
            lines = [l for l in code.splitlines() if l.strip() and not l.strip().startswith("//")]
            if len(lines) > max_lines:
                long_files.append((rel, len(lines)))
            if top not in tops:
                continue
            names = set(PATH.findall(code))
            for group in GROUP.findall(code):
                names |= {x.strip().split("::")[0] for x in group.split(",") if x.strip()}
            edges[top] |= {n for n in names if n in tops and n != top}
    return edges, sorted(long_files)


def cycles(edges):
    """Strongly connected sets of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    max_lines = int(args[args.index("--max-lines") + 1]) if "--max-lines" in args else 500
    edges, long_files = read_graph(args[0], max_lines)
    for module in sorted(edges):
        print(f"{module} -> {' '.join(sorted(edges[module])) or '(nothing)'}")
    found = cycles(edges)
    for component in found:
        print("cycle:", " ".join(component))
    for rel, n in long_files:
        print(f"long: {rel} {n}")
    print(f"cycles={len(found)} long_files={len(long_files)}")
    return 1 if found and "--strict" in args else 0


if __name__ == "__main__":
    sys.exit(main())
