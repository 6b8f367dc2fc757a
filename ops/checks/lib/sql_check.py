#!/usr/bin/env python3
"""Runs every MySQL query of the dashboards against a real MariaDB/MySQL.

    sql_check.py --database DB [--host 127.0.0.1 --port 3306 --user root --password '']

DB must exist and hold the bridge's schema (co2-bridge migrate); it should be a
throwaway database: this script fills it. It:
  1. creates a SELECT-only account on DB (as Grafana's) and runs every query as it;
  2. runs every panel query on the empty tables with $device = All (a fresh install
     must not show query errors);
  3. seeds 3 devices over 2 days (and some dead letters), runs the variable
     query, then every panel query for each time range (dashboard default, the
     seeded 2 days) and $device = All / one device / two devices, with Grafana's
     macros expanded by grafana_sql.py, and checks the result has the shape the
     panel needs (time_series: `time` first, ascending, a numeric value; not empty);
  4. with --bridge, rebuilds the rollup tiers from the seed (`co2-bridge rollup
     rebuild`) and runs every panel against its raw-only query for each tier
     (tier_check.py);
  5. drops the account. (The caller drops DB.)
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import datetime as dt
import decimal
import math
import re
import os
import secrets
import subprocess
import tempfile
import time

import pymysql

import grafana_sql
import obslib
import raw_panels
import tier_check

DEVICES = ["pi-1", "pi-2", "pi-3"]
SEED_DAYS = 2
SEED_STEP_S = 300
# Numbered devices, and pi-2's gaps (first, last, announced, state): what the
# Completeness panel must report for the seeded range.
SEQ_EPOCHS = {"pi-1": "00000000000000a1", "pi-2": "00000000000000a2"}
GAPS = {"pi-2": [(100, 109, 4, "final"), (200, 202, 0, "open"), (300, 301, 0, "filled")]}
REASONS = ["bad_datetime", "out_of_range", "missing_separator", "too_far_in_future"]


def utc(ts):
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


def relative_seconds(text):
    """'now-24h' / '7d' -> seconds before now."""
    m = re.fullmatch(r"(?:now-)?(\d+)([smhdwy])", text.strip())
    if not m:
        raise ValueError(f"unsupported relative time {text!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[m.group(2)]


def epoch(value):
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc).timestamp()
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    raise TypeError(f"time value of type {type(value).__name__}")


def is_number(value):
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def seed(conn, now):
    rows = []
    times = {}
    start = now - SEED_DAYS * 86400
    for i, device in enumerate(DEVICES):
        # pi-3 stopped 30 minutes ago, so "age" panels show a stale device too.
        end = now - (1800 if device == "pi-3" else 0)
        t = start + i  # distinct seconds per device
        n = 0
        while t <= end:
            n += 1
            times[(device, n)] = utc(t)
            value = 420 + 100 * i + 80 * math.sin(t / 3600.0)
            received = utc(t + 0.25)
            # pi-1 and pi-2 number their readings, pi-3 does not (a
            # third-party publisher); pi-2's gaps are left out of the table.
            epoch_, seq = SEQ_EPOCHS.get(device), n
            missing = any(a <= n <= b and state != "filled" for a, b, _, state in GAPS.get(device, []))
            if not missing:
                rows.append((device, utc(t), round(value, 2), received, epoch_, seq if epoch_ else None))
            t += SEED_STEP_S
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO co2_emissions (device, date_time, emissions, received_at, seq_epoch, seq) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            rows)
        cur.executemany(
            "INSERT INTO reading_gaps (device, epoch, first_seq, last_seq, announced, state, first_seen, "
            "from_time, to_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(device, SEQ_EPOCHS[device], a, b, announced, state, utc(now), times[(device, a - 1)],
              times[(device, b + 1)])
             for device, gaps in GAPS.items() for a, b, announced, state in gaps])
        dead = []
        for k in range(12):
            t = now - k * 4 * 3600 - 60
            payload = f"2020-13-45 99:99:99|{k}".encode()
            dead.append((utc(t), f"co2/pi-{k % 3 + 1}/emissions", payload, len(payload), REASONS[k % len(REASONS)]))
        cur.executemany(
            "INSERT INTO rejected_messages (received_at, topic, payload, payload_bytes, reason) "
            "VALUES (%s, %s, %s, %s, %s)", dead)
        # The other routes' tables: three bins every 10 minutes (full now and
        # then), two JSON sensors with two fields each, a text and a boolean field.
        bins, readings = [], []
        t = start
        while t <= now:
            for b in range(3):
                level = (t / 600 + 17 * b) % 110
                full = level >= 100
                bins.append((f"bin-{b + 1}", utc(t), None if full else round(level, 1), int(full)))
            for s in range(2):
                readings.append((f"dht-{s + 1}", f"sensors/dht-{s + 1}/dht11", utc(t), "temp",
                                 round(20 + 3 * math.sin(t / 7200.0) + s, 1)))
                readings.append((f"dht-{s + 1}", f"sensors/dht-{s + 1}/dht11", utc(t), "humidity",
                                 round(45 + 10 * math.cos(t / 7200.0) - s, 1)))
            t += 600
        cur.executemany(
            "INSERT INTO bin_levels (bin_id, measured_at, level, `full`) VALUES (%s, %s, %s, %s)", bins)
        cur.executemany(
            "INSERT INTO readings (device, topic, `time`, field, value) VALUES (%s, %s, %s, %s, %s)",
            readings)
        # Text and boolean fields, one with a tag (a named topic level), as
        # Tasmota and Shelly send them.
        others, t = [], start
        while t <= now:
            unit = "C" if int(t / 3600) % 2 else "F"
            others.append(("tasmota-1", "tele/tasmota-1/SENSOR", utc(t), "TempUnit", None, unit, "text", None, b""))
            others.append(("shelly-1", "shellies/shelly-1/relay/0/power", utc(t), "on", int(t / 1800) % 2, None,
                           "bool", '{"channel":"0"}', b"k0"))
            # A sensor announced by Home Assistant discovery: its unit and
            # device class in the tags, keyed by field.
            others.append(("zigbee2mqtt_0x00178801", "zigbee2mqtt/office", utc(t), "co2", 420 + int(t / 600) % 40,
                           None, "number", '{"co2.unit": "ppm", "co2.device_class": "carbon_dioxide"}', b"kd"))
            t += 600
        cur.executemany(
            "INSERT INTO readings (device, topic, `time`, field, value, text_value, kind, tags, tags_key) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", others)
        # A LoRaWAN sensor through ChirpStack: its decoded co2, the radio
        # fields, and its frames (counter 1, 2, ... with 3 lost now and then:
        # one final gap, and one still open at the end).
        lora, frames, t, f_cnt = [], [], start + 7, 0
        dev = "0004a30b001c0530"
        while t <= now:
            f_cnt += 4 if f_cnt == 40 else 1
            for field, value in (("co2", 500 + f_cnt % 60), ("lorawan.rssi", -90 - f_cnt % 25),
                                 ("lorawan.snr", 7.5 - f_cnt % 15), ("lorawan.gateways", 1 + f_cnt % 2),
                                 ("lorawan.f_cnt", f_cnt)):
                lora.append((dev, f"application/1/device/{dev}/event/up", utc(t), field, value))
            frames.append((dev, utc(t), 0x0101_0101, "01010101-seed000", f_cnt))
            t += 600
        cur.executemany(
            "INSERT INTO readings (device, topic, `time`, field, value) VALUES (%s, %s, %s, %s, %s)", lora)
        cur.executemany(
            "INSERT INTO lorawan_frames (device, `time`, dev_addr, epoch, f_cnt) VALUES (%s, %s, %s, %s, %s)",
            frames)
        cur.executemany(
            "INSERT INTO reading_gaps (device, epoch, first_seq, last_seq, state, first_seen, from_time, to_time) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(dev, "01010101-seed000", 41, 43, "final", utc(now), frames[39][1], frames[40][1]),
             (dev, "01010101-seed000", f_cnt + 1, f_cnt + 2, "open", utc(now), frames[-1][1], utc(now))])
    conn.commit()
    return len(rows), len(dead)


def check_completeness(c, ro, targets, now):
    """The Completeness panel's figures on the seed, not just its shape."""
    found = [(dash, t) for _, dash, p, t in targets if p.get("title") == "Completeness"]
    if not c.check(len(found) == 1, "the CO2 dashboard has a Completeness panel"):
        return
    dash, target = found[0]
    variables = mysql_variables(dash)
    models = {n: dict(v, options=[{"text": d, "value": d} for d in DEVICES]) for n, v in variables.items()}
    sql = grafana_sql.interpolate(target["rawSql"], models, {n: ["$__all"] for n in variables},
                                  now - SEED_DAYS * 86400 - 60, now, 60000)
    cols, rows = run(ro, sql)
    got = {r[0]: dict(zip(cols, r)) for r in rows}
    with ro.cursor() as cur:
        cur.execute("SELECT device, COUNT(seq), SUM(seq IS NULL) FROM co2_emissions GROUP BY device")
        stored = {d: (int(n), int(u)) for d, n, u in cur.fetchall()}
    want = {
        "pi-1": (stored["pi-1"][0], 0, 0, 0, 0, 100),
        "pi-2": (stored["pi-2"][0], 4, 6, 3, 0, 100 * stored["pi-2"][0] / (stored["pi-2"][0] + 13)),
        "pi-3": (0, 0, 0, 0, stored["pi-3"][1], None),
    }
    for device, (n, dropped, lost, pending, unnumbered, pct) in want.items():
        row = got.get(device)
        if not c.check(row is not None, f"Completeness: a row for {device}", f"{rows}"):
            continue
        figures = (int(row["Stored"]), int(row["Dropped at source"]), int(row["Lost in transit"]),
                   int(row["Not yet arrived"]), int(row["Unnumbered"]), int(row["Expected"]))
        c.check(figures == (n, dropped, lost, pending, unnumbered, n + dropped + lost + pending),
                f"Completeness: {device} stored {n}, dropped {dropped}, lost {lost}, pending {pending}, "
                f"unnumbered {unnumbered}", f"got {figures}")
        share = row["Complete %"]
        c.check((share is None and pct is None) or (share is not None and pct is not None
                                                     and abs(float(share) - pct) < 1e-3),
                f"Completeness: {device} is {pct if pct is None else round(pct, 3)} % complete", f"got {share}")


def check_units(c, ro, targets, now):
    """A discovered sensor's unit is in its legend; its tags are not."""
    title = "Sensor readings (JSON, bare values): numbers"
    found = [(dash, t) for _, dash, p, t in targets if p.get("title") == title]
    if not c.check(len(found) == 1, f"the CO2 dashboard has '{title}'"):
        return
    dash, target = found[0]
    variables = mysql_variables(dash)
    models = {n: dict(v, options=[{"text": d, "value": d} for d in DEVICES]) for n, v in variables.items()}
    for interval_ms in (1000, 60000, 3600000):
        sql = grafana_sql.interpolate(target["rawSql"], models, {n: ["$__all"] for n in variables},
                                      now - 86400, now, interval_ms)
        _, rows = run(ro, sql)
        metrics = {r[1] for r in rows}
        c.check("zigbee2mqtt_0x00178801 co2 (ppm)" in metrics
                and any(m.startswith('shelly-1 on {"channel"') for m in metrics),
                f"{title}: a discovered sensor's legend names its unit, other tags stay (interval {interval_ms} ms)",
                f"{sorted(metrics)}")


def check_frame_loss(c, ro, targets, now):
    """The LoRaWAN frame loss table's figures on the seed."""
    found = [(dash, t) for _, dash, p, t in targets if p.get("title") == "LoRaWAN frame loss"]
    if not c.check(len(found) == 1, "the CO2 dashboard has a LoRaWAN frame loss panel"):
        return
    dash, target = found[0]
    sql = grafana_sql.interpolate(target["rawSql"], {}, {}, now - SEED_DAYS * 86400 - 60, now, 60000)
    cols, rows = run(ro, sql)
    with ro.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM lorawan_frames")
        (frames,) = cur.fetchone()
    got = [dict(zip(cols, r)) for r in rows]
    want = {"Device": "0004a30b001c0530", "Uplinks": frames, "Sessions": 1, "Lost uplinks": 3,
            "Not yet arrived": 2}
    c.check(len(got) == 1 and all(got[0][k] == v for k, v in want.items())
            and abs(float(got[0]["Loss %"]) - 300 / (frames + 3)) < 1e-3,
            f"LoRaWAN frame loss: {frames} uplinks, 3 lost, 2 not yet arrived", f"{got}")


def mysql_targets():
    """(dashboard name, dashboard, panel, target) for every MySQL query."""
    out = []
    for path in obslib.dashboard_files():
        dash = obslib.load_dashboard(path)
        for panel, target, ds in obslib.iter_targets(dash):
            if ds.get("type") == "mysql":
                out.append((path.name, dash, panel, target))
    return out


def mysql_variables(dash):
    return {n: v for n, v in obslib.variables(dash).items()
            if (v.get("datasource") or {}).get("type") == "mysql"}


def variable_options(ro, dash):
    """Each MySQL variable's options, as Grafana computes them from its query."""
    options = {}
    for vname, var in mysql_variables(dash).items():
        q = var.get("query")
        q = q.get("rawSql", "") if isinstance(q, dict) else str(q)
        _, rows = run(ro, q)
        options[vname] = [str(r[0]) for r in rows]
    return options


def var_models_of(ro, dash):
    """The variable models with their options filled in."""
    options = variable_options(ro, dash)
    return {n: dict(v, options=[{"text": o, "value": o} for o in options[n]])
            for n, v in mysql_variables(dash).items()}


def cases_of(ro, dash):
    """Selections to run: All, one value, and two values of a multi variable."""
    variables = mysql_variables(dash)
    options = variable_options(ro, dash)
    cases = [{n: ["$__all"] for n in variables}]
    for vname in variables:
        opts = sorted(options[vname])
        if opts:
            cases.append({**{n: ["$__all"] for n in variables}, vname: [opts[1 % len(opts)]]})
        if variables[vname].get("multi") and len(opts) >= 2:
            cases.append({**{n: ["$__all"] for n in variables}, vname: [opts[0], opts[-1]]})
    return cases


def check_shape(c, label, fmt, cols, rows, selected_devices, require_rows=True):
    if require_rows and not c.check(len(rows) > 0, f"{label}: {len(rows)} rows"):
        return
    if fmt == "time_series":
        if not c.check(cols[0] in ("time", "time_sec"), f"{label}: first column is the time ({cols[0]!r})",
                       f"columns: {cols}"):
            return
        times = [epoch(r[0]) for r in rows]
        c.check(times == sorted(times), f"{label}: time ascending")
        value_cols = [i for i in range(1, len(cols)) if rows and is_number(rows[0][i])]
        c.check(not rows or value_cols, f"{label}: has a numeric value column", f"columns: {cols}")
    label_cols = [i for i, name in enumerate(cols) if name.lower() in ("metric", "device")]
    if selected_devices is not None and label_cols:
        seen = {r[label_cols[0]] for r in rows}
        c.check(seen <= set(selected_devices), f"{label}: only the selected devices",
                f"selected {selected_devices}, got {sorted(seen)}")


def apply_migrations(c, args, directory):
    """Runs each migration file as one multi-statement query, as sqlx does."""
    from pathlib import Path  # noqa: PLC0415

    conn = pymysql.connect(host=args.host, port=args.port, user=args.user, password=args.password,
                           database=args.database, autocommit=True,
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    for path in sorted(Path(directory).glob("*.sql")):
        with conn.cursor() as cur:
            cur.execute(path.read_text(encoding="utf-8"))
            while cur.nextset():
                pass
        c.ok(f"applied {path.name}")
    conn.close()


def rollup_rebuild(c, args):
    """`co2-bridge rollup rebuild` over the seed, with the routes that write
    readings and bin_levels configured (the CO2 route is built in)."""
    routes = """
[[routes]]
name = "bins"
topics = ["bins/level"]
decoder = "delimited"
table = "bin_levels"
trust_payload_device = true
[routes.delimited]
separator = " "
fields = [
  { column = "level", type = "number", flag_word = "FULL", flag_column = "full" },
  { column = "bin_id", type = "device" },
  { column = "measured_at", type = "datetime", span = 2 },
]

[[routes]]
name = "dht11"
topics = ["sensors/{device}/dht11"]
decoder = "json"
table = "readings"
[routes.json]
mode = "long"
time_field = "time"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(routes)
    try:
        password = f":{args.password}" if args.password else ""
        env = dict(os.environ, CO2_BRIDGE__DATABASE__URL=f"mysql://{args.user}{password}@{args.host}:{args.port}/"
                                                         f"{args.database}")
        out = subprocess.run([args.bridge, "--config", f.name, "rollup", "rebuild"], env=env,
                             capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.unlink(f.name)
    return c.check(out.returncode == 0, "co2-bridge rollup rebuild over the seed",
                   (out.stdout + out.stderr)[-2000:])


def run(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, list(cur.fetchall())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3306)
    ap.add_argument("--user", default="root")
    ap.add_argument("--password", default="")
    ap.add_argument("--database", required=True)
    ap.add_argument("--bridge", metavar="BIN",
                    help="co2-bridge binary: rebuild the rollups and compare every panel with its raw query")
    ap.add_argument("--apply-migrations", metavar="DIR",
                    help="first run DIR/*.sql in name order (stand-in while `co2-bridge migrate` is unavailable)")
    args = ap.parse_args()
    c = obslib.Counter()
    if args.apply_migrations:
        apply_migrations(c, args, args.apply_migrations)

    mysql_ds = [d for d in obslib.provisioned_datasources() if d.get("type") == "mysql"]
    session_tz = ((mysql_ds[0].get("jsonData") or {}).get("timezone")) if mysql_ds else None
    c.check(session_tz == "+00:00", f"provisioned MySQL data source sets session time zone {session_tz!r}")
    min_interval_s = 60
    if mysql_ds and (mysql_ds[0].get("jsonData") or {}).get("timeInterval"):
        min_interval_s = grafana_sql.parse_interval_s(mysql_ds[0]["jsonData"]["timeInterval"])

    admin = pymysql.connect(host=args.host, port=args.port, user=args.user, password=args.password,
                            database=args.database, autocommit=True)
    ro_user = "co2chk_ro_" + secrets.token_hex(4)
    ro_pass = secrets.token_urlsafe(16)
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{ro_user}'@'%%' IDENTIFIED BY %s", (ro_pass,))
        cur.execute(f"GRANT SELECT ON `{args.database}`.* TO '{ro_user}'@'%'")
    try:
        ro = pymysql.connect(host=args.host, port=args.port, user=ro_user, password=ro_pass,
                             database=args.database, autocommit=True,
                             init_command="SET time_zone = '+00:00'")
        c.ok(f"queries run as SELECT-only account {ro_user} with session time_zone +00:00")
        with ro.cursor() as cur:
            try:
                cur.execute("INSERT INTO co2_emissions (device, date_time, emissions) VALUES ('x', NOW(), 1)")
                c.fail("the SELECT-only account cannot write")
            except pymysql.err.OperationalError:
                c.ok("the SELECT-only account cannot write")

        targets = mysql_targets()
        c.check(len(targets) > 0, f"{len(targets)} MySQL queries in the dashboards")
        now = int(time.time()) // 60 * 60

        # Every query on empty tables, $device = All with no options, as on a fresh install.
        for name, dash, panel, target in targets:
            label = f"{name}: {panel.get('title')!r} {target['refId']} [empty tables, All]"
            variables = mysql_variables(dash)
            empty_vars = {n: dict(v, options=[]) for n, v in variables.items()}
            try:
                sql = grafana_sql.interpolate(target["rawSql"], empty_vars, {n: ["$__all"] for n in variables},
                                              now - 86400, now, 60000)
                cols, rows = run(ro, sql)
                c.ok(f"{label}: runs ({len(rows)} rows)")
            except (pymysql.MySQLError, grafana_sql.MacroError) as e:
                c.fail(f"{label}: runs", e)

        n_rows, n_dead = seed(admin, now)
        c.ok(f"seeded {n_rows} readings of {len(DEVICES)} devices over {SEED_DAYS} days, {n_dead} dead letters")
        # The panels read the rollup tiers: fill them from the seed, as the
        # bridge does for the rows it writes.
        rebuilt = bool(args.bridge) and rollup_rebuild(c, args)

        for name, dash, panel, target in targets:
            # Variable options, as Grafana computes them from the variable's own query.
            var_models, cases = var_models_of(ro, dash), cases_of(ro, dash)

            default_from = relative_seconds(dash["time"]["from"])
            ranges = [(f"dashboard range {dash['time']['from']}", now - default_from, now),
                      ("seeded 2 days", now - SEED_DAYS * 86400, now)]
            if panel.get("timeFrom"):
                ranges = [(f"panel range {panel['timeFrom']}", now - relative_seconds(panel["timeFrom"]), now)]
            # A panel's min interval replaces the data source's (PanelQueryRunner:
            # `minInterval ? minInterval : ds.interval`), lower or higher.
            min_iv = min_interval_s
            if panel.get("interval"):
                min_iv = grafana_sql.parse_interval_s(panel["interval"])
            fmt = target.get("format")
            c.check(fmt in ("time_series", "table"), f"{name}: {panel.get('title')!r} format {fmt!r}")
            for rlabel, f, t in ranges:
                iv = grafana_sql.panel_interval_ms(f, t, panel.get("maxDataPoints") or 1000, min_iv)
                for sel in cases:
                    sel_text = ", ".join(f"${k}={'All' if v == ['$__all'] else '+'.join(v)}" for k, v in sel.items())
                    label = f"{name}: {panel.get('title')!r} {target['refId']} [{rlabel}; {sel_text or 'no vars'}]"
                    try:
                        sql = grafana_sql.interpolate(target["rawSql"], var_models, sel, f, t, iv)
                        cols, rows = run(ro, sql)
                    except (pymysql.MySQLError, grafana_sql.MacroError) as e:
                        c.fail(f"{label}: runs", e)
                        continue
                    devices = sel.get("device")
                    # Only queries that use $device must honour it (the bins and
                    # sensor panels show other routes' devices).
                    if "$device" not in target["rawSql"] and "${device" not in target["rawSql"]:
                        devices = None
                    check_shape(c, label, fmt, cols, rows, None if devices in (None, ["$__all"]) else devices)

        check_completeness(c, ro, targets, now)
        check_units(c, ro, targets, now)
        check_frame_loss(c, ro, targets, now)

        if rebuilt:
            tier_check.check(c, lambda sql: run(ro, sql), targets, lambda d: var_models_of(ro, d),
                             lambda d: cases_of(ro, d), now, now - SEED_DAYS * 86400)

        for name, dash in {n: d for n, d, _, _ in targets}.items():
            for vname, var in mysql_variables(dash).items():
                cols, rows = run(ro, var["query"] if isinstance(var["query"], str) else var["query"]["rawSql"])
                c.check(len(cols) == 1 and sorted(r[0] for r in rows) == DEVICES,
                        f"{name}: variable ${vname} lists the seeded devices", f"{cols} {rows}")
                c.check(var.get("multi") and var.get("includeAll"), f"{name}: variable ${vname} is multi + All")
                if rebuilt and vname == "device":
                    _, raw_rows = run(ro, raw_panels.RAW_DEVICE_VARIABLE)
                    c.check(sorted(rows) == sorted(raw_rows),
                            f"{name}: variable ${vname} lists what its raw query lists", f"{rows} vs {raw_rows}")
        ro.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{ro_user}'@'%'")
        admin.close()
    c.finish()


if __name__ == "__main__":
    main()
