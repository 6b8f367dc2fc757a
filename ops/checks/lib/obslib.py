"""Shared helpers of the observability checks: where the files are, how to
walk dashboards, the PASS/FAIL counter every check prints.

Only the standard library here, so any python3 can import it; PyYAML is
imported lazily by the functions that need it.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# CO2_DASHBOARD_DIR lets a test point the checks at other (e.g. deliberately broken) dashboards.
DASHBOARD_DIR = Path(os.environ.get("CO2_DASHBOARD_DIR") or REPO / "grafana" / "dashboards")
GRAFANA_PROV = REPO / "provisioning" / "grafana"
PROM_DIR = REPO / "provisioning" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.rules.yml"))
METRIC_NAMES_FILE = Path(__file__).resolve().parent / "metric-names.txt"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "co2-telemetry"


class Counter:
    """Counts sub-checks and prints one line each, then the summary line."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, msg):
        self.passed += 1
        print(f"ok   - {msg}", flush=True)

    def fail(self, msg, detail=None):
        self.failed += 1
        print(f"FAIL - {msg}", flush=True)
        if detail:
            for line in str(detail).rstrip().splitlines():
                print(f"       {line}", flush=True)

    def check(self, cond, msg, detail=None):
        if cond:
            self.ok(msg)
        else:
            self.fail(msg, detail)
        return cond

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


def dashboard_files():
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def iter_panels(dashboard):
    """Every panel, including those nested in rows, as (panel, parent_row_or_None)."""
    for panel in dashboard.get("panels", []):
        yield panel, None
        for inner in panel.get("panels", []) or []:
            yield inner, panel


def panel_datasource(panel, target):
    return target.get("datasource") or panel.get("datasource") or {}


def iter_targets(dashboard):
    """(panel, target, datasource) for every query target of every panel."""
    for panel, _ in iter_panels(dashboard):
        for target in panel.get("targets", []) or []:
            yield panel, target, panel_datasource(panel, target)


def variables(dashboard):
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def load_yaml(path):
    import yaml  # noqa: PLC0415 (lazy: only some checks need PyYAML)

    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def provisioned_datasources():
    out = []
    for path in sorted((GRAFANA_PROV / "datasources").glob("*.y*ml")):
        doc = load_yaml(path) or {}
        for ds in doc.get("datasources", []) or []:
            out.append(ds)
    return out


def rule_exprs():
    """(where, expr) for every alerting/recording rule."""
    out = []
    for path in RULE_FILES:
        doc = load_yaml(path) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record")
                out.append((f"{path.name}:{name}", str(rule["expr"])))
    return out


def prometheus_targets():
    """(where, panel, target, dashboard) for every Prometheus query of every dashboard."""
    out = []
    for path in dashboard_files():
        dash = load_dashboard(path)
        for panel, target, ds in iter_targets(dash):
            if ds.get("type") == "prometheus":
                where = f"{path.name}: {panel.get('title')!r} {target.get('refId')}"
                out.append((where, panel, target, dash))
    return out


def metric_name_lines(path=METRIC_NAMES_FILE):
    """(name, type, flags) per line of metric-names.txt ("name type [optional]", # comments)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, kind, *flags = line.split()
            yield name, kind, flags


def load_metric_names(path=METRIC_NAMES_FILE):
    """{name: type} from metric-names.txt."""
    return {name: kind for name, kind, _ in metric_name_lines(path)}


def optional_metric_names(path=METRIC_NAMES_FILE):
    """Names a scrape may lack: exported only once they have a value (flag "optional")."""
    return {name for name, _, flags in metric_name_lines(path) if "optional" in flags}


VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]")


def stop_process(proc, timeout=20):
    """Terminates a child process a check started (if it still runs), killing it after TIMEOUT s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
