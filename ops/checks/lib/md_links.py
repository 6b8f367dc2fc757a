#!/usr/bin/env python3
"""Relative links and anchors in the repository's Markdown.

    md_links.py [--root DIR] [FILE.md ...]

Without files: every *.md that git tracks under DIR (default: the current
directory), except target/, the fuzz corpora and the crates copied into
vendor/ as published (their links point into their upstream repositories;
vendor/README.md itself is ours and checked). For each file:

- a relative link or image must name a file or directory git tracks (one
  that exists only on this disk is broken on GitHub and in a fresh clone),
  and must not leave the repository;
- `#anchor` and `file.md#anchor` must match a heading of that file, slugged
  as GitHub does (lowercase; punctuation other than - and _ removed; each
  space a -; a repeated heading gets -1, -2, ...), or an explicit
  <a name="..."> / id="...".

http(s), mailto and other scheme links are not fetched (no network): skipped.
Links inside fenced code blocks and code spans are not links. Stdlib only.
Prints one line per problem (file:line: what) and "N passed, M failed"
(one sub-check per file); exits 1 when any link is broken.
"""

import argparse
import os
import re
import subprocess
import sys
import unicodedata
import urllib.parse

EXCLUDED_PREFIXES = ("target/",)
# libFuzzer corpora and crash artifacts hold inputs, not documentation.
EXCLUDED_PARTS = ("corpus", "artifacts")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
HTML_ANCHOR = re.compile(r"<[A-Za-z][^>]*?\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.I)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def tracked_files(root):
    """Paths (relative, '/'-separated) git tracks under root, and their directories."""
    out = subprocess.run(["git", "-C", root, "ls-files", "-z"], check=True,
                         capture_output=True).stdout.decode("utf-8", "surrogateescape")
    files = {p for p in out.split("\0") if p}
    dirs = {""}
    for p in files:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return files, dirs


def excluded(path):
    if path.startswith(EXCLUDED_PREFIXES):
        return True
    parts = path.split("/")
    if parts[0] == "vendor" and len(parts) > 2:
        return True  # vendor/<crate>/...: upstream's text, kept as published
    return parts[0] == "fuzz" and any(p in EXCLUDED_PARTS for p in parts)


def strip_inline(text):
    """A heading's text as GitHub renders it: no markup, code spans as their text."""
    text = CODE_SPAN.sub(lambda m: "\0" + m.group(2).strip().replace("_", "\1") + "\0", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    # _emphasis_ at word edges is markup, an underscore inside a word is not.
    text = re.sub(r"(?<![\w\\])_{1,2}(?=\S)(.+?)(?<=\S)_{1,2}(?!\w)", r"\1", text)
    return text.replace("\0", "").replace("\1", "_")


def slug(text):
    """GitHub's anchor for a heading (github-slugger)."""
    out = []
    for ch in strip_inline(text).strip().lower():
        cat = unicodedata.category(ch)
        if ch in " -" or cat[0] in "LMN" or cat == "Pc":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def scan(text):
    """(anchors, links): anchors of the file, links as (line number, target)."""
    anchors, counts, links = set(), {}, []

    def add_heading(title):
        base = slug(title)
        s, n = base, counts.get(base, 0)
        while s in counts:  # github-slugger: the first free base-N
            n += 1
            s = f"{base}-{n}"
        counts[base] = n
        counts.setdefault(s, 0)
        anchors.add(s)

    fence = None
    prev = None  # the previous line, for setext headings
    for lineno, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not line.strip()[len(m.group(1)):].strip():
                fence = None
            prev = None
            continue
        if m:
            fence = m.group(1)
            prev = None
            continue
        h = ATX_HEADING.match(line)
        if h:
            add_heading(h.group(2) or "")
        elif prev and prev.strip() and SETEXT_UNDERLINE.match(line) \
                and not prev.startswith(("    ", "\t")) and not prev.lstrip().startswith(("|", "-", "*", ">", "#")):
            add_heading(prev)
        anchors.update(a for a in HTML_ANCHOR.findall(CODE_SPAN.sub("", line)))
        for target in line_links(line):
            links.append((lineno, target))
        prev = line
    return anchors, links


def line_links(line):
    """Link and image targets on one line (outside code spans)."""
    line = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
    m = REF_DEF.match(line)
    if m:
        yield m.group(1).strip("<>")
        return
    i = 0
    while True:
        j = line.find("](", i)
        if j < 0:
            break
        k = j + 2
        if k < len(line) and line[k] == "<":  # [text](<target with spaces>)
            end = line.find(">", k)
            if end < 0:
                break
            yield line[k + 1:end]
            i = end
            continue
        depth, end = 0, k
        while end < len(line):  # balanced parentheses, as CommonMark allows
            c = line[end]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif c in " \t" and depth == 0:
                break  # a title follows
            end += 1
        target = line[k:end]
        if target:
            yield target
        i = end
    yield from HTML_LINK.findall(line)


def check_file(root, rel, tracked, dirs, cache):
    """Problems in one Markdown file, as 'file:line: what'."""
    problems = []
    anchors, links = cache_scan(root, rel, cache)
    base = os.path.dirname(rel)
    for lineno, target in links:
        if SCHEME.match(target) or target.startswith("//"):
            continue  # http(s), mailto, ...: not fetched
        path, _, anchor = target.partition("#")
        path = urllib.parse.unquote(path.split("?", 1)[0])
        anchor = urllib.parse.unquote(anchor)
        where = f"{rel}:{lineno}"
        if path:
            joined = path.lstrip("/") if path.startswith("/") else os.path.join(base, path)
            dest = os.path.normpath(joined).replace(os.sep, "/")
            if dest == ".":
                dest = ""
            if dest == ".." or dest.startswith("../"):
                problems.append(f"{where}: {target}: leaves the repository")
                continue
            if dest not in tracked and dest not in dirs:
                why = "not tracked by git" if os.path.exists(os.path.join(root, dest)) else "no such file"
                problems.append(f"{where}: {target}: {why} ({dest})")
                continue
        else:
            dest = rel
        if not anchor or dest in dirs or not dest.lower().endswith(".md"):
            continue  # anchors of code files (#L10) and directories are GitHub's own
        dest_anchors, _ = cache_scan(root, dest, cache)
        if anchor not in dest_anchors:
            near = sorted(a for a in dest_anchors if a.startswith(anchor[:8]))[:3]
            hint = f" (headings nearby: {', '.join(near)})" if near else ""
            problems.append(f"{where}: {target}: no heading or anchor #{anchor} in {dest}{hint}")
    return problems


def cache_scan(root, rel, cache):
    if rel not in cache:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            cache[rel] = scan(f.read())
    return cache[rel]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("files", nargs="*", help="Markdown files relative to --root (default: all tracked)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    tracked, dirs = tracked_files(root)
    files = args.files or sorted(p for p in tracked if p.lower().endswith(".md") and not excluded(p))
    cache, passed, failed = {}, 0, 0
    for rel in files:
        problems = check_file(root, rel, tracked, dirs, cache)
        n = len(cache_scan(root, rel, cache)[1])
        if problems:
            failed += 1
            print(f"FAIL - {rel}: {len(problems)} of {n} links broken")
            for p in problems:
                print(f"       {p}")
        else:
            passed += 1
            print(f"ok   - {rel}: {n} links")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
