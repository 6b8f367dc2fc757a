#!/usr/bin/env bash
# Relative links in the repository's Markdown lead somewhere: every link and
# image to a file must name one git tracks, and every #anchor (in the same
# file or in another .md) a heading's GitHub slug or an <a name/id>.
# External links are not fetched (no network). ops/checks/lib/md_links.py
# does the work; first it must catch a broken link, a missing image and two
# anchor misses in a throwaway repository, and pass a good file there, so
# that a pass over the real repository means something.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

echo "== 57-markdown-links: relative links and anchors in every tracked *.md"
need_cmd git git
HELPER="$CHECKS_LIB/md_links.py"
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

# The self-test's repository: good.md is fine, bad.md has one of each mistake.
git -C "$work" init -q
mkdir -p "$work/docs"
printf 'png\n' >"$work/docs/pic.png"
cat >"$work/docs/other.md" <<'EOF'
# Other

<a name="explicit"></a>
Text.
EOF
cat >"$work/good.md" <<'EOF'
# Good: a page

## Hello, world
## Hello, world
## `code_span` and _emphasis_

[the second hello](#hello-world-1), [code](#code_span-and-emphasis),
[explicit](docs/other.md#explicit), [a directory](docs/), ![pic](docs/pic.png),
[outside, not fetched](https://example.invalid/nowhere), [mail](mailto:a@example.invalid).

```sh
echo "[not a link](missing-in-code.md)"
```
EOF
cat >"$work/bad.md" <<'EOF'
# Bad

[gone](missing.md) and [anchor elsewhere](good.md#no-such-heading)
and ![picture](docs/missing.png) and [own anchor](#not-here).
EOF
git -C "$work" add -A

check "self-test: a good file passes" python3 "$HELPER" --root "$work" good.md docs/other.md
python3 "$HELPER" --root "$work" bad.md >"$work/bad.out" 2>&1 && rc=0 || rc=$?
check "self-test: a file with broken links fails (exit $rc)" test "$rc" = 1
for what in "bad.md:3: missing.md: no such file" \
    "bad.md:3: good.md#no-such-heading: no heading or anchor #no-such-heading in good.md" \
    "bad.md:4: docs/missing.png: no such file" "bad.md:4: #not-here: no heading or anchor #not-here in bad.md"; do
    check "self-test: reports $what" grep -qF -- "$what" "$work/bad.out"
done
printf 'untracked\n' >"$work/untracked.md"
printf '[new](untracked.md)\n' >"$work/links-untracked.md"
git -C "$work" add links-untracked.md
python3 "$HELPER" --root "$work" links-untracked.md >"$work/untracked.out" 2>&1 && rc=0 || rc=$?
check "self-test: a link to a file git does not track fails (exit $rc)" \
    grep -qF "untracked.md: not tracked by git" "$work/untracked.out"

run_counted python3 "$HELPER" --root "$REPO_ROOT"
finish
