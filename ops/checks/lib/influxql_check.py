#!/usr/bin/env python3
"""Runs every InfluxQL query of the dashboards against a real influxd.

    influxql_check.py [--influxd influxd]

Starts its own influxd (Debian's `influxdb` package) on free loopback ports
(HTTP and RPC) with a temporary config and data directory, authentication on
and usage reporting off, never the system service. It then:
  1. creates an admin and a READ-only account (as Grafana's) and runs every
     query as the latter;
  2. runs every panel and variable query on an empty database with every
     variable = All (a fresh install must show no query errors);
  3. seeds what the bridge's InfluxDB sink writes (CO2 points per topic, a
     JSON route's `env`, a delimited route's bins with string and integer
     fields, dead letters in rejected_messages) over 2 days, computes each
     variable's options from its own query, then runs every panel query for
     the dashboard's range (Grafana's relative form) and the seeded 2 days
     (absolute), with All / one value per variable, with Grafana's
     interpolation (grafana_influxql.py), and checks the shape the panel
     needs (time_series: `time` first, ascending, a numeric column; rows
     when seeded);
  4. stops influxd and removes its directory.
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from base64 import b64encode

import grafana_influxql
import grafana_sql
import obslib

DB = "co2"
DEVICES = ["pi-1", "pi-2", "pi-3"]
SEED_DAYS = 2
STEP_S = 300
REASONS = ["bad_datetime", "db_rejected", "missing_separator", "bad_json"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Influx:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="co2-chk-influx-")
        self.port, rpc = free_port(), free_port()
        conf = os.path.join(self.dir, "influxdb.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(f"""reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{self.dir}/meta"
  logging-enabled = false
[data]
  dir = "{self.dir}/data"
  wal-dir = "{self.dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = true
  log-enabled = false
[monitor]
  store-enabled = false
""")
        self.log = open(os.path.join(self.dir, "influxd.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen([binary, "-config", conf], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, INFLUXDB_REPORTING_DISABLED="true"))
        self.auth = None
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2) as r:
                    if r.status == 204:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"influxd did not answer on 127.0.0.1:{self.port}")

    def request(self, path, params, data=None, auth=None):
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=data, method="POST" if data is not None or path == "/write" else "GET")
        auth = auth or self.auth
        if auth:
            req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
                return r.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, {"error": body.decode(errors="replace")}

    def execute(self, statement):
        status, body = self.request("/query", {"q": statement}, data=b"")
        err = (body.get("results") or [{}])[0].get("error") or body.get("error")
        if status != 200 or err:
            raise RuntimeError(f"{statement}: {status} {err}")

    def query(self, q, auth):
        """(series, error) of a read query, as the given account."""
        status, body = self.request("/query", {"db": DB, "q": q, "epoch": "ms"}, auth=auth)
        result = (body.get("results") or [{}])[0]
        err = result.get("error") or body.get("error")
        if status != 200 or err:
            return None, f"{status}: {err}"
        return result.get("series") or [], None

    def write(self, lines):
        status, body = self.request("/write", {"db": DB, "precision": "s"}, data="\n".join(lines).encode())
        if status != 204:
            raise RuntimeError(f"write: {status} {body}")

    def stop(self):
        obslib.stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def seed(influx, now):
    lines = []
    start = now - SEED_DAYS * 86400
    for i, device in enumerate(DEVICES):
        end = now - (1800 if device == "pi-3" else 0)
        t = start + i
        while t <= end:
            value = 420 + 100 * i + 80 * math.sin(t / 3600.0)
            lines.append(f"co2/{device}/emissions,device={device} emissions={value:.2f} {t}")
            t += STEP_S
    t = start
    while t <= now:
        for s in range(2):
            lines.append(f"env,device=dht-{s + 1} temp={20 + 3 * math.sin(t / 7200.0) + s:.1f},"
                         f"humidity={45 + 10 * math.cos(t / 7200.0) - s:.1f} {t}")
        for b in range(3):
            level = (t / 600 + 17 * b) % 110
            full = level >= 100
            fields = f'bin_id="bin-{b + 1}",full={int(full)}i' + ("" if full else f",level={level:.1f}")
            lines.append(f"bins/level,device=bin-{b + 1} {fields} {t}")
        t += 600
    for k in range(12):
        t = now - k * 4 * 3600 - 60
        reason = REASONS[k % len(REASONS)]
        detail = ',detail="partial write: field type conflict"' if reason == "db_rejected" else ""
        lines.append(f'rejected_messages,reason={reason} topic="co2/pi-{k % 3 + 1}/emissions",'
                     f'payload="2020-13-45 99:99:99|{k}",payload_bytes=22i{detail} {t}')
    for i in range(0, len(lines), 5000):
        influx.write(lines[i:i + 5000])
    return len(lines)


def column(series, name):
    out = []
    for s in series or []:
        if name in s.get("columns", []):
            i = s["columns"].index(name)
            out += [row[i] for row in s.get("values", [])]
    return out


# What Grafana takes from each kind of variable query.
def variable_values(q, series):
    upper = q.strip().upper()
    if upper.startswith("SHOW MEASUREMENTS"):
        return column(series, "name")
    if upper.startswith("SHOW FIELD KEYS"):
        return sorted(set(column(series, "fieldKey")))
    if upper.startswith("SHOW TAG VALUES"):
        return sorted(set(column(series, "value")))
    return [row[-1] for s in series or [] for row in s.get("values", [])]


def influx_targets():
    out = []
    for path in obslib.dashboard_files():
        dash = obslib.load_dashboard(path)
        for panel, target, ds in obslib.iter_targets(dash):
            if ds.get("type") == "influxdb":
                out.append((path.name, dash, panel, target))
    return out


def influx_variables(dash):
    return {n: v for n, v in obslib.variables(dash).items()
            if (v.get("datasource") or {}).get("type") == "influxdb"}


def check_shape(c, label, fmt, series, require_rows):
    rows = sum(len(s.get("values", [])) for s in series)
    if require_rows and not c.check(rows > 0, f"{label}: {rows} rows"):
        return
    for s in series:
        cols = s.get("columns", [])
        if not c.check(cols[:1] == ["time"], f"{label}: series {s.get('name')!r} has the time first", cols):
            return
        if fmt == "time_series":
            times = [r[0] for r in s.get("values", [])]
            c.check(times == sorted(times), f"{label}: series {s.get('name')!r} {s.get('tags')} time ascending")
            numeric = any(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for r in s.get("values", []) for v in r[1:])
            c.check(numeric or not s.get("values"), f"{label}: series {s.get('name')!r} has numbers", cols)


def resolve_options(influx, auth, variables, min_interval_s, now):
    """Options of each variable, from its query, with the variables before it interpolated as All."""
    options, models, errors = {}, {}, {}
    for name, var in variables.items():
        q = grafana_influxql.interpolate(str(var.get("query")), models, {n: ["$__all"] for n in models},
                                         now - 86400, now, int(min_interval_s * 1000))
        series, err = influx.query(q, auth)
        values = variable_values(q, series) if err is None else []
        errors[name] = err
        # The variable's regex (a JavaScript /pattern/ in Grafana) filters the options.
        pattern = (var.get("regex") or "").strip()
        if pattern.startswith("/") and pattern.rfind("/") > 0:
            rx = re.compile(pattern[1:pattern.rfind("/")])
            values = [v for v in values if rx.search(str(v))]
        options[name] = values
        models[name] = dict(var, options=[{"text": o, "value": o} for o in options[name]])
    return options, models, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--influxd", default="influxd")
    args = ap.parse_args()
    c = obslib.Counter()
    ds = [d for d in obslib.provisioned_datasources() if d.get("type") == "influxdb"]
    if not c.check(len(ds) == 1, f"one provisioned InfluxDB data source ({[d.get('uid') for d in ds]})"):
        c.finish()
    jd = ds[0].get("jsonData") or {}
    c.check(jd.get("version", "InfluxQL") == "InfluxQL" and jd.get("dbName") == DB,
            f"the data source speaks InfluxQL to database {DB!r} ({jd})")
    min_interval_s = grafana_sql.parse_interval_s(jd.get("timeInterval", "10s"))
    targets = influx_targets()
    c.check(len(targets) > 0, f"{len(targets)} InfluxQL queries in the dashboards")
    influx = Influx(args.influxd)
    try:
        admin = ("chk_admin", secrets.token_urlsafe(12))
        reader = ("chk_grafana", secrets.token_urlsafe(12))
        influx.execute(f"CREATE USER {admin[0]} WITH PASSWORD '{admin[1]}' WITH ALL PRIVILEGES")
        influx.auth = admin
        influx.execute(f'CREATE DATABASE "{DB}"')
        influx.execute(f"CREATE USER {reader[0]} WITH PASSWORD '{reader[1]}'")
        influx.execute(f'GRANT READ ON "{DB}" TO {reader[0]}')
        status, _ = influx.request("/write", {"db": DB}, data=b"x v=1 1", auth=reader)
        c.check(status == 403, f"the READ-only account cannot write (HTTP {status})")
        for p in targets:
            if not c.check(bool(p[3].get("rawQuery")) and p[3].get("resultFormat") in ("time_series", "table"),
                           f"{p[0]}: {p[2].get('title')!r} {p[3]['refId']}: raw InfluxQL, resultFormat "
                           f"{p[3].get('resultFormat')!r}"):
                continue
        now = int(time.time()) // 60 * 60

        def run_all(seeded):
            for name, dash, panel, target in targets:
                variables = influx_variables(dash)
                options, models, errors = resolve_options(influx, reader, variables, min_interval_s, now)
                for vname, err in errors.items():
                    c.check(err is None, f"{name}: variable ${vname} query runs "
                            f"[{'seeded' if seeded else 'empty'}]", err)
                cases = [{n: ["$__all"] for n in variables}]
                if seeded:
                    for vname in variables:
                        opts = options[vname]
                        if opts:
                            cases.append({**cases[0], vname: [opts[1 % len(opts)]]})
                default = dash["time"]["from"]
                relative = default.removeprefix("now-") if dash["time"].get("to") == "now" else None
                ranges = [(f"range {default}", now - grafana_sql.parse_interval_s(relative or "1d"), now, relative),
                          (f"seeded {SEED_DAYS} days", now - SEED_DAYS * 86400, now, None)]
                fmt = target.get("resultFormat")
                for rlabel, f, t, rel in ranges:
                    iv = grafana_sql.panel_interval_ms(f, t, panel.get("maxDataPoints") or 1000, min_interval_s)
                    for sel in cases:
                        sel_text = ", ".join(f"${k}={'All' if v == ['$__all'] else '+'.join(v)}"
                                             for k, v in sel.items())
                        label = (f"{name}: {panel.get('title')!r} {target['refId']} "
                                 f"[{'seeded' if seeded else 'empty'}; {rlabel}; {sel_text}]")
                        q = grafana_influxql.interpolate(target["query"], models, sel, f, t, iv, rel)
                        series, err = influx.query(q, reader)
                        if not c.check(err is None, f"{label}: runs", f"{q}\n{err}"):
                            continue
                        if seeded:
                            check_shape(c, label, fmt, series, require_rows=True)

        run_all(seeded=False)
        n = seed(influx, now)
        c.ok(f"seeded {n} points: CO2 of {len(DEVICES)} devices per topic, env, bins, dead letters")
        run_all(seeded=True)
        for name, dash in {n: d for n, d, _, _ in targets}.items():
            options, _, _ = resolve_options(influx, reader, influx_variables(dash), min_interval_s, now)
            want = {"measurement": {f"co2/{d}/emissions" for d in DEVICES} | {"env", "bins/level"},
                    "device": set(DEVICES) | {"dht-1", "dht-2", "bin-1", "bin-2", "bin-3"},
                    "field": {"emissions", "temp", "humidity", "level", "full", "bin_id"}}
            for vname, opts in options.items():
                if vname in want:
                    c.check(set(opts) == want[vname], f"{name}: variable ${vname} lists what was seeded",
                            f"got {sorted(opts)}, want {sorted(want[vname])}")
    finally:
        influx.stop()
    c.finish()


if __name__ == "__main__":
    main()
