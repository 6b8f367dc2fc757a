#!/usr/bin/env python3
"""Metric names used by dashboards and alert rules vs. metric-names.txt.

    metric_names_check.py                 every name a dashboard or rule uses is listed
    metric_names_check.py --scrape FILE   also: FILE (a /metrics scrape, or "-" for
                                          stdin, or an http:// URL) exports exactly the
                                          listed names with the listed types (those
                                          flagged optional may be absent)

Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import re
import sys
import urllib.request

import obslib

# Series Prometheus makes itself for every target; not exported by the bridge.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_samples_post_metric_relabeling", "scrape_series_added"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan",
}


def promql_metric_names(expr):
    """Metric names referenced by a PromQL expression (a small lexer, not a parser)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\{[^}]*\}", "{}", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "[]", s)  # range / subquery durations
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)", s):
        word = m.group(1)
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue  # function or aggregation
        if word.lower() in PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d+(ms|[smhdwy])", word):
            continue
        names.add(word)
    # {__name__="x"} selectors
    for m in re.finditer(r'__name__\s*=\s*"([^"]+)"', expr):
        names.add(m.group(1))
    return names


def base_name(name, listed):
    if name in listed:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if listed.get(base) in ("histogram", "summary"):
                return base
    return None


def used_names():
    """{metric name: [where used]} over all dashboards and rules."""
    used = {}
    for where, _panel, target, _dash in obslib.prometheus_targets():
        for name in promql_metric_names(target.get("expr", "")):
            used.setdefault(name, []).append(where)
    for path in obslib.dashboard_files():
        dash = obslib.load_dashboard(path)
        for var in obslib.variables(dash).values():
            if (var.get("datasource") or {}).get("type") != "prometheus":
                continue
            query = var.get("query")
            query = query.get("query", "") if isinstance(query, dict) else str(query or "")
            m = re.match(r"\s*label_values\((.*),\s*\w+\s*\)\s*$", query)
            inner = m.group(1) if m else query
            for name in promql_metric_names(inner):
                used.setdefault(name, []).append(f"{path.name}: variable ${var['name']}")
    for where, expr in obslib.rule_exprs():
        for name in promql_metric_names(expr):
            used.setdefault(name, []).append(where)
    return used


def parse_scrape(text):
    """{name: type} from the "# TYPE" lines of a Prometheus text exposition."""
    types = {}
    for line in text.splitlines():
        m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
    return types


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", default=str(obslib.METRIC_NAMES_FILE))
    ap.add_argument("--scrape", help="a /metrics text file, '-' for stdin, or an http(s) URL")
    args = ap.parse_args()

    c = obslib.Counter()
    listed = obslib.load_metric_names(args.names)
    c.check(len(listed) > 0, f"{args.names} lists {len(listed)} metrics")

    used = used_names()
    c.check(len(used) > 0, f"dashboards and rules use {len(used)} metric names")
    for name in sorted(used):
        base = base_name(name, listed)
        if name in PROMETHEUS_SYNTHETIC:
            c.ok(f"{name} (made by Prometheus per target)")
        else:
            c.check(base is not None, f"{name} is a listed metric" + (f" ({base})" if base and base != name else ""),
                    "used in: " + "; ".join(sorted(set(used[name]))))

    unused = sorted(set(listed) - {base_name(n, listed) for n in used})
    if unused:
        print(f"note: listed but not used by a dashboard or rule: {', '.join(unused)}")

    if args.scrape:
        if args.scrape == "-":
            text = sys.stdin.read()
        elif re.match(r"https?://", args.scrape):
            with urllib.request.urlopen(args.scrape, timeout=10) as resp:  # noqa: S310 (test URL)
                text = resp.read().decode()
        else:
            with open(args.scrape, encoding="utf-8") as fh:
                text = fh.read()
        scraped = parse_scrape(text)
        optional = obslib.optional_metric_names(args.names)
        for name, kind in sorted(listed.items()):
            if name in optional and name not in scraped:
                c.ok(f"{name} (optional) is absent")
                continue
            c.check(scraped.get(name) == kind, f"scrape exports {name} as {kind}",
                    f"scrape has: {scraped.get(name, 'nothing')}")
        extra = sorted(n for n in scraped if n.startswith("co2_") and n not in listed)
        c.check(not extra, "scrape exports no co2_* metric missing from the list", ", ".join(extra))
    c.finish()


if __name__ == "__main__":
    main()
