#!/usr/bin/env python3
"""Validates grafana/dashboards/*.json and the Grafana provisioning YAML without Grafana.

    dashboard_check.py --node-modules DIR [--schema-cache DIR] [FILE.json ...]

DIR holds @grafana/schema, ts-json-schema-generator and @grafana/grafana-foundation-sdk
(installed by ops/checks/32-dashboards-schema.sh). No package ships a JSON Schema for
dashboards, so JSON Schemas are generated from @grafana/schema's TypeScript types with
ts-json-schema-generator (cached; loosened where Grafana fills defaults), then
  - the dashboard against Dashboard, each panel against Panel/RowPanel, each panel's
    options and fieldConfig.defaults.custom against its plugin's Options/FieldConfig,
    each Prometheus target against the foundation SDK's dataquery;
  - custom: core panel types, provisioned data source uids, MySQL rawSql + format,
    every $var defined, uid/title rules, unique panel ids, no overlapping panels,
    no share-export leftovers; provisioning: unique uids, one isDefault, access mode.
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema

import obslib

# Panel plugin id -> directory under @grafana/schema raw/composable (core panels).
PANEL_SCHEMA_DIRS = {
    "timeseries": "timeseries", "stat": "stat", "table": "table", "text": "text",
    "bargauge": "bargauge", "gauge": "gauge", "barchart": "barchart", "piechart": "piechart",
    "state-timeline": "statetimeline", "status-history": "statushistory", "heatmap": "heatmap",
    "histogram": "histogram", "logs": "logs", "news": "news", "dashlist": "dashboardlist",
    "annolist": "annotationslist", "nodeGraph": "nodegraph", "geomap": "geomap", "canvas": "canvas",
    "xychart": "xychart", "trend": "trend", "candlestick": "candlestick", "datagrid": "datagrid",
}
CORE_PANEL_TYPES = set(PANEL_SCHEMA_DIRS) | {"row", "alertlist", "flamegraph", "traces"}
SPECIAL_DATASOURCE_UIDS = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"}
MYSQL_TARGET_KEYS = {"refId", "datasource", "rawSql", "format", "rawQuery", "editorMode", "hide",
                     "sql", "dataset", "table", "queryType"}
INFLUX_TARGET_KEYS = {"refId", "datasource", "query", "rawQuery", "resultFormat", "alias", "hide"}
# Grafana's own variables: $__interval and friends, and InfluxQL's $timeFilter and $interval.
GRAFANA_BUILTIN_VARS = re.compile(r"^(__|timeFilter$|interval$)")
UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class Schemas:
    def __init__(self, node_modules, cache):
        self.nm = Path(node_modules)
        self.cache = Path(cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.gen = self.nm / "ts-json-schema-generator" / "bin" / "ts-json-schema-generator.js"
        self.tsconfig = self.cache / "tsconfig.json"
        self.tsconfig.write_text(json.dumps({"compilerOptions": {
            "strict": True, "skipLibCheck": True, "module": "esnext",
            "moduleResolution": "node", "target": "es2020"}}))

    def _types_file(self, rel):
        root = self.nm / "@grafana" / "schema" / "dist" / "types" / "raw"
        hits = sorted((root / rel).glob("*types.gen.d.ts"))
        return hits[0] if hits else None

    def generate(self, name, ts_file, type_name):
        out = self.cache / f"{name}.schema.json"
        if not out.exists():
            r = subprocess.run(["node", str(self.gen), "--tsconfig", str(self.tsconfig), "--functions", "hide",
                                "--path", str(ts_file), "--type", type_name, "-o", str(out)],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                out.unlink(missing_ok=True)
                if "No root type" in r.stderr:
                    return None
                raise RuntimeError(f"schema generation for {name} failed:\n{r.stderr[-2000:]}")
        return json.loads(out.read_text())

    def dashboard(self):
        s = self.generate("dashboard", self._types_file("dashboard/x"), "Dashboard")
        # Grafana writes `definition` (the query's display text) on query variables.
        s["definitions"]["VariableModel"]["properties"]["definition"] = {"type": "string"}
        return s

    def panel(self, panel_type, which):
        d = PANEL_SCHEMA_DIRS.get(panel_type)
        if not d:
            return None
        ts = self._types_file(f"composable/{d}/panelcfg/x")
        if ts is None:
            return None
        s = self.generate(f"{d}.{which}", ts, which)
        if s is None:
            return None
        s = copy.deepcopy(s)
        root = s["$ref"].split("/")[-1]
        s["definitions"][root].pop("required", None)  # Grafana fills defaults
        return s

    def prometheus_query(self):
        ts = self.nm / "@grafana" / "grafana-foundation-sdk" / "dist" / "prometheus" / "types.gen.d.ts"
        return self.generate("prometheus.dataquery", ts, "dataquery")


def sub_schema(schema, definition):
    s = dict(schema)
    s["$ref"] = f"#/definitions/{definition}"
    return s


def errors(schema, instance):
    v = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))]


def var_refs(text):
    return {m.group(1) or m.group(2) or m.group(3) for m in obslib.VAR_RE.finditer(text or "")}


def check_provisioning(c):
    dss = obslib.provisioned_datasources()
    c.check(len(dss) > 0, f"{len(dss)} provisioned data sources")
    uids = [d.get("uid") for d in dss]
    c.check(all(uids) and len(set(uids)) == len(uids), f"data source uids set and unique: {uids}")
    defaults = [d.get("name") for d in dss if d.get("isDefault")]
    c.check(len(defaults) <= 1, f"at most one isDefault data source ({defaults})")
    for d in dss:
        c.check(d.get("access", "proxy") in ("proxy", "direct"), f"data source {d.get('uid')}: access proxy|direct")
        if d.get("type") == "influxdb":
            jd = d.get("jsonData") or {}
            c.check(jd.get("version", "InfluxQL") == "InfluxQL" and bool(jd.get("dbName")),
                    f"data source {d.get('uid')}: InfluxQL with a database ({jd.get('dbName')})")
            pw = (d.get("secureJsonData") or {}).get("password", "")
            c.check(bool(re.fullmatch(r"\$\{?\w+\}?", str(pw))),
                    f"data source {d.get('uid')}: password comes from the environment ({pw})")
        if d.get("type") == "mysql":
            jd = d.get("jsonData") or {}
            c.check(jd.get("timezone") == "+00:00", f"data source {d.get('uid')}: session time zone +00:00")
            c.check(bool(jd.get("database") or d.get("database")), f"data source {d.get('uid')}: database set")
            pw = (d.get("secureJsonData") or {}).get("password", "")
            c.check(bool(re.fullmatch(r"\$\{?\w+\}?", str(pw))),
                    f"data source {d.get('uid')}: password comes from the environment ({pw})")
    providers = []
    for path in sorted((obslib.GRAFANA_PROV / "dashboards").glob("*.y*ml")):
        providers += (obslib.load_yaml(path) or {}).get("providers", []) or []
    c.check(len(providers) > 0 and all((p.get("options") or {}).get("path") for p in providers),
            f"{len(providers)} dashboard provider(s) with a path")
    return {(d.get("type"), d.get("uid")) for d in dss}


def check_dashboard(c, schemas, path, ds_refs, seen_uids, seen_titles):
    name = path.name
    raw = path.read_text(encoding="utf-8")
    try:
        dash = json.loads(raw)
    except json.JSONDecodeError as e:
        c.fail(f"{name}: valid JSON", e)
        return
    c.check("__inputs" not in dash and "${DS_" not in raw, f"{name}: not a share-export (__inputs, ${{DS_...}})")
    uid, title = dash.get("uid", ""), dash.get("title", "")
    c.check(bool(UID_RE.match(uid or "")), f"{name}: uid {uid!r} is 1-40 chars of [A-Za-z0-9_-]")
    c.check(uid not in seen_uids, f"{name}: uid {uid!r} unique across files", f"also in {seen_uids.get(uid)}")
    seen_uids[uid] = name
    c.check(bool(title.strip()), f"{name}: title {title!r} non-empty")
    c.check(title not in seen_titles, f"{name}: title unique in the provider's folder")
    seen_titles.add(title)

    dschema = schemas.dashboard()
    top = copy.deepcopy(dash)
    panels = top.pop("panels", [])
    errs = errors(dschema, top)
    c.check(not errs, f"{name}: dashboard model valid (schema Dashboard)", "\n".join(errs[:20]))

    variables = obslib.variables(dash)
    for vname, var in variables.items():
        vref = var.get("datasource")
        if vref:
            c.check((vref.get("type"), vref.get("uid")) in ds_refs,
                    f"{name}: variable ${vname} data source {vref} is provisioned")
        if var.get("includeAll") and not var.get("allValue"):
            print(f"note: {name}: ${vname} has All without allValue: with no options it expands to IN ()")
    for ann in dash.get("annotations", {}).get("list", []):
        aref = ann.get("datasource") or {}
        c.check(aref.get("uid") in SPECIAL_DATASOURCE_UIDS or (aref.get("type"), aref.get("uid")) in ds_refs,
                f"{name}: annotation {ann.get('name')!r} data source is provisioned or built in")

    ids = []
    cells = {}
    prom_schema = schemas.prometheus_query()
    for panel, parent in obslib.iter_panels(dash):
        ptitle = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
        ptype = panel.get("type")
        ids.append(panel.get("id"))
        if not c.check(ptype in CORE_PANEL_TYPES, f"{ptitle}: core panel type {ptype!r}"):
            continue
        definition = "RowPanel" if ptype == "row" else "Panel"
        errs = errors(sub_schema(dschema, definition), panel)
        c.check(not errs, f"{ptitle}: valid {definition}", "\n".join(errs[:20]))
        gp = panel.get("gridPos") or {}
        if all(isinstance(gp.get(k), (int, float)) for k in "xywh"):
            ok_w = gp["x"] >= 0 and gp["w"] > 0 and gp["x"] + gp["w"] <= 24 and gp["h"] > 0
            c.check(ok_w, f"{ptitle}: gridPos inside the 24-column grid", gp)
            clash = [cells[(x, y)] for x in range(int(gp["x"]), int(gp["x"] + gp["w"]))
                     for y in range(int(gp["y"]), int(gp["y"] + gp["h"])) if (x, y) in cells]
            c.check(not clash, f"{ptitle}: does not overlap another panel", f"overlaps {set(clash)}")
            for x in range(int(gp["x"]), int(gp["x"] + gp["w"])):
                for y in range(int(gp["y"]), int(gp["y"] + gp["h"])):
                    cells[(x, y)] = panel.get("id")
        if ptype == "row":
            continue
        opt_schema = schemas.panel(ptype, "Options")
        if opt_schema is not None:
            errs = errors(opt_schema, panel.get("options", {}))
            c.check(not errs, f"{ptitle}: options valid ({ptype} Options)", "\n".join(errs[:20]))
        custom = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom")
        fc_schema = schemas.panel(ptype, "FieldConfig")
        if fc_schema is not None and custom is not None:
            errs = errors(fc_schema, custom)
            c.check(not errs, f"{ptitle}: fieldConfig.defaults.custom valid ({ptype} FieldConfig)",
                    "\n".join(errs[:20]))

        refs = set()
        for text in (panel.get("title"), panel.get("description")):
            refs |= {r for r in var_refs(text) if r in variables or not GRAFANA_BUILTIN_VARS.match(r)}
        for ref in (panel.get("datasource"),):
            if ref:
                c.check(ref.get("uid") in SPECIAL_DATASOURCE_UIDS or (ref.get("type"), ref.get("uid")) in ds_refs,
                        f"{ptitle}: panel data source {ref} is provisioned")
        targets = panel.get("targets") or []
        c.check(len(targets) > 0 or ptype in ("text", "news", "dashlist", "annolist", "alertlist"),
                f"{ptitle}: has queries")
        ref_ids = [t.get("refId") for t in targets]
        c.check(len(set(ref_ids)) == len(ref_ids) and all(ref_ids), f"{ptitle}: refIds set and unique {ref_ids}")
        for t in targets:
            tref = obslib.panel_datasource(panel, t)
            tname = f"{ptitle} target {t.get('refId')}"
            if not c.check((tref.get("type"), tref.get("uid")) in ds_refs,
                           f"{tname}: data source {tref} is provisioned"):
                continue
            if tref.get("type") == "mysql":
                c.check(bool((t.get("rawSql") or "").strip()), f"{tname}: has rawSql")
                c.check(t.get("format") in ("time_series", "table"),
                        f"{tname}: format {t.get('format')!r} is time_series or table")
                unknown = set(t) - MYSQL_TARGET_KEYS
                c.check(not unknown, f"{tname}: no unknown keys", unknown)
                refs |= var_refs(t.get("rawSql"))
            elif tref.get("type") == "influxdb":
                c.check(bool((t.get("query") or "").strip()) and t.get("rawQuery") is True,
                        f"{tname}: raw InfluxQL query")
                c.check(t.get("resultFormat") in ("time_series", "table"),
                        f"{tname}: resultFormat {t.get('resultFormat')!r} is time_series or table")
                unknown = set(t) - INFLUX_TARGET_KEYS
                c.check(not unknown, f"{tname}: no unknown keys", unknown)
                refs |= var_refs(t.get("query")) | var_refs(t.get("alias"))
            elif tref.get("type") == "prometheus":
                errs = errors(prom_schema, t)
                c.check(not errs, f"{tname}: valid Prometheus dataquery", "\n".join(errs[:20]))
                refs |= var_refs(t.get("expr")) | var_refs(t.get("legendFormat"))
        undefined = sorted(r for r in refs if r not in variables and not GRAFANA_BUILTIN_VARS.match(r))
        c.check(not undefined, f"{ptitle}: every $variable is defined", f"undefined: {undefined}")
    c.check(len(ids) == len(set(ids)) and None not in ids, f"{name}: panel ids unique")
    return dash


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node-modules", required=True)
    ap.add_argument("--schema-cache", help="where generated schemas are kept (default: beside node_modules)")
    ap.add_argument("files", nargs="*", help="dashboards (default: grafana/dashboards/*.json)")
    args = ap.parse_args()
    c = obslib.Counter()
    schemas = Schemas(args.node_modules, args.schema_cache or Path(args.node_modules).parent / "schemas")
    ds_refs = check_provisioning(c)
    files = [Path(f) for f in args.files] or obslib.dashboard_files()
    c.check(len(files) > 0, f"{len(files)} dashboard files")
    seen_uids, seen_titles = {}, set()
    try:
        for path in files:
            check_dashboard(c, schemas, path, ds_refs, seen_uids, seen_titles)
    except RuntimeError as e:
        c.fail("schema generation", e)
    c.finish()


if __name__ == "__main__":
    sys.exit(main())
