"""Grafana's InfluxQL query interpolation, reimplemented for tests.

As Grafana does it for raw InfluxQL queries (the frontend's
InfluxDatasource.interpolateQueryExpr, then the backend's influxql query
builder):

1. template variables: a multi-value or include-All variable becomes its
   values regex-escaped (escapeRegex: \\ ^ $ * + ? . ( ) | [ ] { } /), one
   value as it is, several as (a|b); All without allValue is every option;
   a plain single-valued variable is inserted raw;
2. $timeFilter: `time >= now() - 24h and time <= now()` for a relative range
   such as now-24h, else `time >= <from>ms and time <= <to>ms`;
3. $__interval and $interval: the interval text (1m, 10s, ...), $__interval_ms
   the milliseconds.
The interval itself is computed as for SQL (grafana_sql.panel_interval_ms):
range / max data points, rounded, not below the data source's timeInterval.
"""

import re

from grafana_sql import interval_text

_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


def escape_regex(value):
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), str(value))


def format_variable(var, selected):
    """How the InfluxDB data source inserts a template variable."""
    if not (var.get("multi") or var.get("includeAll")):
        if len(selected) != 1:
            raise ValueError(f"variable {var['name']} is single-valued")
        return str(selected[0])
    if selected == ["$__all"]:
        if var.get("allValue"):
            return var["allValue"]
        selected = [o["value"] for o in var.get("options", []) if o.get("value") != "$__all"]
    escaped = [escape_regex(v) for v in selected]
    if len(escaped) == 1:
        return escaped[0]
    return "(" + "|".join(escaped) + ")"


def time_filter(from_s, to_s, relative=None):
    """relative: e.g. '24h' for the range now-24h .. now, as Grafana writes it."""
    if relative:
        return f"time >= now() - {relative} and time <= now()"
    return f"time >= {int(from_s * 1000)}ms and time <= {int(to_s * 1000)}ms"


_VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]")


def interpolate(query, variables, selections, from_s, to_s, interval_ms, relative=None):
    """The InfluxQL Grafana would send for this range, these variable values and interval."""
    builtins = {
        "timeFilter": time_filter(from_s, to_s, relative),
        "__interval": interval_text(interval_ms),
        "interval": interval_text(interval_ms),
        "__interval_ms": str(interval_ms),
    }

    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in variables:
            return format_variable(variables[name], selections[name])
        if name in builtins:
            return builtins[name]
        return m.group(0)

    return _VAR_RE.sub(sub, query)
