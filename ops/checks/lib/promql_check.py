#!/usr/bin/env python3
"""Runs every PromQL expression of the dashboards and alert rules through a real
Prometheus' /api/v1/query and fails on any error.

    promql_check.py --url http://127.0.0.1:PORT [--require-data]
        check against a running Prometheus (e.g. one scraping a live bridge);
        --require-data also fails a dashboard query that returns no series
    promql_check.py --start [--require-data]
        start a private Prometheus on a free 127.0.0.1 port over a temporary TSDB
        filled with synthetic series of every metric in metric-names.txt, check,
        and stop it
    promql_check.py --scrape-target 127.0.0.1:PORT [--require-data]
        start a private Prometheus with the repository's provisioning/prometheus
        (config + rules) whose co2-bridge job scrapes only that target, wait for
        a successful scrape, check, and stop it (end-to-end test with a live bridge)

Dashboard variables are replaced as Grafana would for "All": $__rate_interval,
$__interval -> 1m, $__range -> 1h, other $vars -> their allValue (or .*).
Library use: exprs(), substitute(), check_exprs(base_url, exprs, counter, require_data),
start_prometheus(config_text, tsdb_dir) -> (process, base_url).
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import obslib

BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__interval_ms": "60000",
            "__range": "1h", "__range_s": "3600", "__range_ms": "3600000"}


def substitute(expr, variables):
    """expr with Grafana's built-ins and template variables replaced ("All")."""

    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        var = variables.get(name)
        if var is not None:
            return var.get("allValue") or ".*"
        return m.group(0)

    return obslib.VAR_RE.sub(sub, expr)


def exprs(include_rules=True):
    """[(where, expr, is_dashboard)] with variables substituted."""
    out = []
    for where, _panel, target, dash in obslib.prometheus_targets():
        out.append((where, substitute(target.get("expr", ""), obslib.variables(dash)), True))
    if include_rules:
        for where, expr in obslib.rule_exprs():
            out.append((where, expr, False))
    return out


def query(base_url, expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(base_url.rstrip("/") + "/api/v1/query", data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback test server)
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 400/422 carry the error as JSON
        return json.load(e)


def check_exprs(base_url, items, counter, require_data=False, at=None):
    for where, expr, is_dashboard in items:
        leftover = re.findall(r"\$\{?\w+", expr)
        if leftover:
            counter.fail(f"{where}: unreplaced variables {leftover}", expr)
            continue
        res = query(base_url, expr, at)
        if res.get("status") != "success" or res.get("errorType"):
            counter.fail(f"{where}: query", f"{res.get('errorType')}: {res.get('error')}\n{expr}")
            continue
        result = res["data"]["result"]
        n = len(result) if isinstance(result, list) else 1
        if require_data and is_dashboard:
            counter.check(n > 0, f"{where}: parses, {n} series", expr)
        else:
            counter.ok(f"{where}: parses ({n} series)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prometheus(config_text, tsdb_dir, timeout_s=60):
    """Starts `prometheus` on a free 127.0.0.1 port; returns (Popen, base_url)."""
    cfg = os.path.join(tsdb_dir, "..", "prometheus.yml")
    with open(cfg, "w", encoding="utf-8") as fh:
        fh.write(config_text)
    port = free_port()
    log = open(os.path.join(tsdb_dir, "..", "prometheus.log"), "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tsdb_dir}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return proc, base
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("prometheus did not become ready")



def start_scraping(work, target, timeout_s=60):
    """Prometheus with the repository's config and rules, job co2-bridge -> target.
    Scrapes every 1s so a test need not wait; returns (Popen, base_url) once
    three scrapes of the target succeeded."""
    conf_dir = os.path.join(work, "prometheus")
    shutil.copytree(obslib.PROM_DIR, conf_dir)
    with open(os.path.join(conf_dir, "targets", "co2-bridge.yml"), "w", encoding="utf-8") as fh:
        fh.write(f"- targets: ['{target}']\n")
    # No Alertmanager here (58-alerts runs one): the compose name alertmanager:9093
    # would only send DNS lookups off this machine.
    with open(os.path.join(conf_dir, "targets", "alertmanager.yml"), "w", encoding="utf-8") as fh:
        fh.write("[]\n")
    with open(os.path.join(conf_dir, "prometheus.yml"), encoding="utf-8") as fh:
        text = fh.read()
    text = re.sub(r"(scrape_interval|evaluation_interval): \d+s", r"\1: 1s", text)
    text = re.sub(r"scrape_timeout: \d+s", "scrape_timeout: 1s", text)
    text = text.replace("rules/", os.path.join(conf_dir, "rules") + "/")
    text = text.replace("targets/", os.path.join(conf_dir, "targets") + "/")
    tsdb = os.path.join(work, "tsdb")
    os.makedirs(tsdb)
    proc, base = start_prometheus(text, tsdb)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        # rate() and increase() need at least two samples in their window; wait
        # for three successful scrapes so every dashboard query has data.
        res = query(base, 'sum_over_time(up{job="co2-bridge"}[1m])')
        vals = [r["value"][1] for r in res.get("data", {}).get("result", [])]
        if vals and all(float(v) >= 3 for v in vals):
            return proc, base
        time.sleep(0.5)
    obslib.stop_process(proc)
    raise RuntimeError(f"no successful scrape of {target} within {timeout_s}s")


def synthetic_openmetrics(names, end, minutes=60, step_s=15):
    """OpenMetrics text with a plausible series for every listed metric."""
    base = 'job="co2-bridge",instance="bridge:9464"'
    devices = ["pi-1", "pi-2"]
    lines = []
    steps = range(int(minutes * 60 / step_s) + 1)
    start = end - minutes * 60

    def series(name, labels, fn):
        lab = ",".join(x for x in (base, labels) if x)
        for i in steps:
            lines.append(f"{name}{{{lab}}} {fn(i):g} {start + i * step_s}")

    series("up", "", lambda i: 1)
    for name, kind in names.items():
        if kind == "histogram":
            for le, share in (("0.1", 0.5), ("1", 0.9), ("10", 0.99), ("+Inf", 1.0)):
                series(f"{name}_bucket", f'le="{le}"', lambda i, s=share: int(i * 10 * s))
            series(f"{name}_sum", "", lambda i: i * 4.0)
            series(f"{name}_count", "", lambda i: i * 10)
        elif name.endswith("_rejected_total"):
            for reason in ("bad_datetime", "out_of_range"):
                series(name, f'reason="{reason}"', lambda i: i)
        elif name.endswith("_total"):
            series(name, "", lambda i: i * 10)
        elif "device" in name or name == "co2_emissions_latest":
            for d in devices:
                if "timestamp" in name:
                    series(name, f'device="{d}"', lambda i: start + i * step_s)
                else:
                    series(name, f'device="{d}"', lambda i: 450 + i % 7)
        elif name.endswith("_build_info"):
            series(name, 'version="0.1.0"', lambda i: 1)
        else:
            series(name, "", lambda i: 1)
    # OpenMetrics wants all samples of one series together; they are.
    return "\n".join(lines) + "\n# EOF\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--url", help="base URL of a running Prometheus")
    g.add_argument("--start", action="store_true", help="start a private Prometheus with synthetic data")
    g.add_argument("--scrape-target", metavar="HOST:PORT", help="start a private Prometheus scraping this bridge")
    ap.add_argument("--scrape-timeout", type=float, default=60, help="seconds to wait for the first scrape")
    ap.add_argument("--require-data", action="store_true")
    ap.add_argument("--no-rules", action="store_true", help="only the dashboards' expressions")
    args = ap.parse_args()
    c = obslib.Counter()
    items = exprs(include_rules=not args.no_rules)
    c.check(len(items) > 0, f"{len(items)} PromQL expressions in dashboards and rules")

    if args.url:
        check_exprs(args.url, items, c, args.require_data)
        c.finish()

    work = tempfile.mkdtemp(prefix="co2-promql-")
    proc = None
    if args.scrape_target:
        try:
            proc, base = start_scraping(work, args.scrape_target, args.scrape_timeout)
            c.ok(f"prometheus at {base} scraped {args.scrape_target}")
            check_exprs(base, items, c, args.require_data)
        except RuntimeError as e:
            c.fail("prometheus scraping the bridge", e)
        finally:
            obslib.stop_process(proc)
            shutil.rmtree(work, ignore_errors=True)
        c.finish()
    try:
        tsdb = os.path.join(work, "tsdb")
        os.makedirs(tsdb)
        now = int(time.time())
        om = os.path.join(work, "data.om")
        with open(om, "w", encoding="utf-8") as fh:
            fh.write(synthetic_openmetrics(obslib.load_metric_names(), now - 15))
        r = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, tsdb],
                           capture_output=True, text=True, check=False)
        if not c.check(r.returncode == 0, "synthetic TSDB blocks created", r.stdout + r.stderr):
            c.finish()
        proc, base = start_prometheus("global:\n  scrape_interval: 15s\n", tsdb)
        c.ok(f"prometheus ready at {base}")
        check_exprs(base, items, c, args.require_data, at=now)
    except RuntimeError as e:
        c.fail("prometheus", e)
    finally:
        obslib.stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
