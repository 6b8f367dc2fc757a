"""Grafana's MySQL query interpolation, reimplemented for tests.

As Grafana's source does it (pkg/tsdb/mysql/macros.go, the SQL engine's
sql_engine.go and the frontend's SqlDatasource.ts):

1. the frontend replaces template variables, $__interval and $__interval_ms;
2. the backend replaces $__interval_ms, $__interval, $__unixEpochFrom() and
   $__unixEpochTo() as plain strings;
3. macros are matched by  \\$([_a-zA-Z0-9]+)\\(([^\\)]*)\\)  (so an argument cannot
   contain ')'); arguments are split on ',' and trimmed; an unknown macro is an
   error, as in Grafana.

co2-bench expands the same way in Rust (bench/src/dashboards/grafana.rs, for
`co2-bench dashboards`): change both together; its unit tests hold strings
printed by this module.
"""

import re

# Grafana's nice intervals (kbn.roundInterval), in ms, with the upper bound of each step.
_ROUND = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
]


class MacroError(ValueError):
    pass


def round_interval_ms(ms):
    for bound, value in _ROUND:
        if ms < bound:
            return value
    return 31536000000


def panel_interval_ms(from_s, to_s, max_data_points=1000, min_interval_s=60):
    """$__interval for a panel: range / maxDataPoints, rounded, not below the
    minimum: the panel's min interval when it sets one, else the data source's
    (jsonData.timeInterval, 1m by default for SQL)."""
    ms = round_interval_ms((to_s - from_s) * 1000 / max_data_points)
    return max(ms, min_interval_s * 1000)


def interval_text(ms):
    """Largest whole unit: y d h m s, else ms (Grafana's secondsToHms-like text)."""
    for unit, size in (("y", 31536000000), ("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_interval_s(text):
    text = text.strip().strip("'\"")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not m:
        raise MacroError(f"bad interval {text!r}")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return float(m.group(1)) * factor[m.group(2)]


def _quote(value):
    return "'" + str(value).replace("'", "''") + "'"


def format_variable(var, selected):
    """How the MySQL data source inserts a template variable.

    var: the dashboard's variable model; selected: list of chosen values, or
    ["$__all"]. "All" expands to the custom allValue (raw) or to every option.
    """
    multi_like = bool(var.get("multi") or var.get("includeAll"))
    if selected == ["$__all"]:
        if var.get("allValue"):
            return var["allValue"]
        values = [o["value"] for o in var.get("options", []) if o.get("value") != "$__all"]
        return ",".join(_quote(v) for v in values)
    if multi_like:
        return ",".join(_quote(v) for v in selected)
    if len(selected) != 1:
        raise MacroError(f"variable {var['name']} is single-valued")
    return str(selected[0]).replace("'", "''")


def replace_variables(sql, variables, selections, interval_ms):
    """Step 1 (frontend): $var, ${var}, [[var]], $__interval, $__interval_ms."""
    builtins = {"__interval": interval_text(interval_ms), "__interval_ms": str(interval_ms)}

    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in builtins:
            return builtins[name]
        if name in variables:
            return format_variable(variables[name], selections[name])
        return m.group(0)  # not a variable: a macro or literal text

    return re.sub(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]", sub, sql)


MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def expand_macros(sql, from_s, to_s, interval_ms):
    """Steps 2 and 3 (backend)."""
    f, t = int(from_s), int(to_s)
    sql = sql.replace("$__interval_ms", str(interval_ms))
    sql = sql.replace("$__interval", interval_text(interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(f)).replace("$__unixEpochTo()", str(t))

    def group(args, expr):
        if len(args) < 2:
            raise MacroError("macro __timeGroup needs time column and interval")
        secs = parse_interval_s(args[1])
        if len(args) == 3 and not re.fullmatch(r"NULL|previous|-?\d+(\.\d+)?", args[2]):
            raise MacroError(f"bad fill value {args[2]!r}")
        return f"{expr} DIV {secs:.0f} * {secs:.0f}"

    def sub(m):
        name = m.group(1)
        args = [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN FROM_UNIXTIME({f}) AND FROM_UNIXTIME({t})"
        if name == "__timeFrom":
            return f"FROM_UNIXTIME({f})"
        if name == "__timeTo":
            return f"FROM_UNIXTIME({t})"
        if name in ("__time", "__timeEpoch"):
            return f"UNIX_TIMESTAMP({args[0]}) as time_sec"
        if name == "__timeGroup":
            return group(args, f"UNIX_TIMESTAMP({args[0]})")
        if name == "__timeGroupAlias":
            return group(args, f"UNIX_TIMESTAMP({args[0]})") + ' AS "time"'
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {f} AND {args[0]} <= {t}"
        if name == "__unixEpochNanoFilter":
            return f"{args[0]} >= {f * 10**9} AND {args[0]} <= {t * 10**9}"
        if name == "__unixEpochNanoFrom":
            return str(f * 10**9)
        if name == "__unixEpochNanoTo":
            return str(t * 10**9)
        if name == "__unixEpochGroup":
            return group(args, args[0])
        if name == "__unixEpochGroupAlias":
            return group(args, args[0]) + ' AS "time"'
        raise MacroError(f"unknown macro {name!r}")

    return MACRO_RE.sub(sub, sql)


# Grafana refuses these (sqleng: queries that read the connection's identity or grants).
RESTRICTED = re.compile(r"\buser\s*\(|current_user|session_user|system_user|show\s+grants", re.I)


def interpolate(sql, variables, selections, from_s, to_s, interval_ms):
    """The SQL Grafana would send for this range, these variable values and interval."""
    if RESTRICTED.search(sql):
        raise MacroError("query reads the connection's identity or grants; Grafana rejects it")
    for m in MACRO_RE.finditer(sql):
        if "(" in m.group(2):
            raise MacroError(f"macro argument contains a parenthesis: {m.group(0)!r}"
                             " (the macro ends at the first ')')")
    sql = replace_variables(sql, variables, selections, interval_ms)
    return expand_macros(sql, from_s, to_s, interval_ms)
