"""Every rewritten panel against its raw-only query, for every tier.

The CO2 dashboard's MySQL panels read the rollup tiers (co2_emissions_1m/_1h/_1d
and the like) picked by $__interval_ms or by the range; raw_panels.RAW holds the
same panels as they were, reading raw rows only. With the tiers rebuilt from the
seeded raw rows (`co2-bridge rollup rebuild`), both are run with the same
variables, ranges and intervals (10 s: raw rows, 1 m, 1 h and 1 d: each tier)
and must give the same rows: counts, times and names equal, numbers within 1e-9
relative (a sum of doubles depends on the order it is added in) or, for the raw
AVG(), which MariaDB rounds to 6 decimals for a DOUBLE(7,2) column, within
that rounding.

Time series and the daily totals draw a bucket that overlaps the range, so they
equal the raw query on ranges aligned to the tier they read; every other panel
(last 24 h, completeness, latest) must be exact on any range, and is also run
on a range that starts and ends mid-minute, on a reading.
"""

import datetime as dt
import decimal

import grafana_sql
import raw_panels

MINUTE, HOUR, DAY = 60, 3600, 86400
# $__interval_ms values, and the alignment a range needs for each to be exact.
# A time series reads the coarsest tier whose length divides the interval
# (tiers 1m, 5m, 30m, 1h, 6h, 1d), and needs ranges aligned to that tier.
INTERVALS = [(10_000, MINUTE), (60_000, MINUTE), (300_000, 5 * MINUTE), (1_800_000, 30 * MINUTE),
             (3_600_000, HOUR), (10_800_000, HOUR), (21_600_000, 6 * HOUR), (43_200_000, 6 * HOUR),
             (86_400_000, DAY), (604_800_000, DAY)]
# Panels whose tier buckets may reach outside the range (they are drawn when
# they overlap it), and the alignment they need beyond their interval's.
OVERLAPPING = {"CO2 per device": 1, "Bin fill level": 1, "Sensor readings (JSON, bare values): numbers": 1,
               "LoRaWAN readings (decoded fields)": 1,
               "LoRaWAN signal: best RSSI (dBm), SNR (dB), gateways per uplink": 1,
               "Daily totals (UTC days, last 7 days)": DAY}


def ranges(now, seed_start):
    """(label, from, to, alignment): to is one second before an aligned time,
    so a bucket at or before it lies wholly in the range."""
    today = now // DAY * DAY
    hour = now // HOUR * HOUR
    minute = now // MINUTE * MINUTE
    return [
        ("yesterday (UTC day)", today - DAY, today - 1, DAY),
        ("the last 7 whole hours", hour - 7 * HOUR, hour - 1, HOUR),
        ("the last 97 whole minutes", minute - 97 * MINUTE, minute - 1, MINUTE),
        # Starts and ends on a reading, mid-minute: pi-1 reads at seed_start + 300 k,
        # pi-2 at seed_start + 1 + 300 k (sql_check.seed).
        ("mid-minute, from and to on readings", seed_start + 2700, now - 3599, None),
    ]


def same_value(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        a, b = float(a), float(b)
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b)) or (b == round(b, 6) and abs(a - b) <= 5e-7 + 1e-9 * abs(b))
    if isinstance(a, (int, decimal.Decimal)) and isinstance(b, (int, decimal.Decimal)):
        return decimal.Decimal(a) == decimal.Decimal(b)
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return a == b
    return a == b


def first_difference(got, want):
    if len(got) != len(want):
        return f"{len(got)} rows, raw query {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if len(g) != len(w) or not all(same_value(x, y) for x, y in zip(g, w)):
            return f"row {i}: {g} vs raw {w}"
    return None


def check(c, run, targets, var_models, cases_of, now, seed_start):
    """run(sql) -> (cols, rows); targets: (name, dash, panel, target);
    var_models(dash) and cases_of(dash) as sql_check builds them."""
    by_title = {p.get("title"): (dash, t) for _, dash, p, t in targets}
    c.check(set(raw_panels.RAW) <= set(by_title), "every raw reference query has its panel",
            f"missing: {sorted(set(raw_panels.RAW) - set(by_title))}")
    for title, raw_sql in raw_panels.RAW.items():
        if title not in by_title:
            continue
        dash, target = by_title[title]
        models = var_models(dash)
        compared = 0
        uses_interval = "$__interval" in target["rawSql"] or "$__interval" in raw_sql
        for rlabel, f, t, align in ranges(now, seed_start):
            for iv, need in INTERVALS if uses_interval else INTERVALS[1:2]:
                if title in OVERLAPPING and (align is None or align % need or align % OVERLAPPING[title]):
                    continue
                for sel in cases_of(dash):
                    sel_text = ", ".join(f"${k}={'All' if v == ['$__all'] else '+'.join(v)}" for k, v in sel.items())
                    label = f"{title!r} [{rlabel}; $__interval_ms={iv}; {sel_text or 'no vars'}]"
                    try:
                        _, got = run(grafana_sql.interpolate(target["rawSql"], models, sel, f, t, iv))
                        _, want = run(grafana_sql.interpolate(raw_sql, models, sel, f, t, iv))
                    except Exception as e:  # noqa: BLE001 - reported as a failed sub-check
                        c.fail(f"{label}: runs", e)
                        continue
                    diff = first_difference(list(got), list(want))
                    if diff:
                        c.fail(f"{label}: equals the raw query", diff)
                    elif not want and title not in ("Bins reported FULL",):
                        c.fail(f"{label}: the raw query returns rows to compare")
                    else:
                        compared += 1
        c.check(compared > 0, f"{title!r}: equals its raw-only query in {compared} cases "
                              "(ranges x intervals x $device)")
