//! Grafana 10's interpolation of a MySQL panel query: the SQL the database
//! receives for a time range, the variables' values and `$__interval`.
//!
//! The same steps and substitutions as `ops/checks/lib/grafana_sql.py`, the
//! dashboard SQL check's expander: change both together. From Grafana's
//! source (pkg/tsdb/mysql/macros.go, sqleng/sql_engine.go, SqlDatasource.ts):
//!
//! 1. the frontend replaces template variables, `$__interval` and `$__interval_ms`;
//! 2. the backend replaces `$__interval_ms`, `$__interval`, `$__unixEpochFrom()`
//!    and `$__unixEpochTo()` as plain strings;
//! 3. macros are matched by `\$([_a-zA-Z0-9]+)\(([^\)]*)\)` (an argument cannot
//!    contain `)`), their arguments split on `,` and trimmed; an unknown macro
//!    is an error, as in Grafana.

use std::collections::BTreeMap;

/// Why a query cannot be interpolated (Grafana would show an error instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacroError {
    /// An interval argument that is not `<number><unit>`.
    #[error("bad interval {0:?}")]
    BadInterval(String),
    /// `$__timeGroup` without a column and an interval.
    #[error("macro {0} needs time column and interval")]
    GroupArgs(String),
    /// A fill argument that is not NULL, previous or a number.
    #[error("bad fill value {0:?}")]
    BadFill(String),
    /// A macro Grafana does not know.
    #[error("unknown macro {0:?}")]
    Unknown(String),
    /// A column macro without its column.
    #[error("macro {0} needs a column")]
    NoColumn(String),
    /// Several values for a variable that takes one.
    #[error("variable {0} is single-valued")]
    SingleValued(String),
    /// `(` in a macro's arguments: the macro would end at the first `)`.
    #[error("macro argument contains a parenthesis: {0:?} (the macro ends at the first ')')")]
    Parenthesis(String),
    /// A query Grafana refuses to send.
    #[error("query reads the connection's identity or grants; Grafana rejects it")]
    Restricted,
}

/// Grafana's nice intervals (rangeutil `roundInterval`), in ms: below the
/// first figure of a step, the second. Above the last: a year.
const ROUND: [(f64, u64); 28] = [
    (15.0, 10),
    (35.0, 20),
    (75.0, 50),
    (150.0, 100),
    (350.0, 200),
    (750.0, 500),
    (1_500.0, 1_000),
    (3_500.0, 2_000),
    (7_500.0, 5_000),
    (12_500.0, 10_000),
    (17_500.0, 15_000),
    (25_000.0, 20_000),
    (45_000.0, 30_000),
    (90_000.0, 60_000),
    (210_000.0, 120_000),
    (450_000.0, 300_000),
    (750_000.0, 600_000),
    (1_050_000.0, 900_000),
    (1_500_000.0, 1_200_000),
    (2_700_000.0, 1_800_000),
    (5_400_000.0, 3_600_000),
    (9_000_000.0, 7_200_000),
    (16_200_000.0, 10_800_000),
    (32_400_000.0, 21_600_000),
    (86_400_000.0, 43_200_000),
    (604_800_000.0, 86_400_000),
    (1_814_400_000.0, 604_800_000),
    (3_628_800_000.0, 2_592_000_000),
];

const YEAR_MS: u64 = 31_536_000_000;

/// Grafana's `roundInterval`: `ms` to the nice interval it falls in.
pub fn round_interval_ms(ms: f64) -> u64 {
    ROUND
        .iter()
        .find(|(bound, _)| ms < *bound)
        .map_or(YEAR_MS, |&(_, value)| value)
}

/// The SQL data sources' lower limit of `$__interval` when neither the data
/// source (`jsonData.timeInterval`) nor the panel sets one.
pub const DEFAULT_MIN_INTERVAL_MS: u64 = 60_000;

/// `$__interval` in ms, as Grafana's `calculateInterval`: the range divided by
/// the points the panel draws, rounded, and not below `min_interval_ms` (the
/// panel's min interval when it sets one, else the data source's).
pub fn panel_interval_ms(range_ms: u64, max_data_points: u64, min_interval_ms: u64) -> u64 {
    let raw = range_ms as f64 / max_data_points.max(1) as f64;
    round_interval_ms(raw).max(min_interval_ms)
}

/// An interval as Grafana writes it: the largest whole unit of y d h m s, else ms.
pub fn interval_text(ms: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("y", YEAR_MS),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ];
    UNITS
        .iter()
        .find(|(_, size)| ms >= *size && ms % size == 0)
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, size)| format!("{}{unit}", ms / size),
        )
}

/// Seconds of an interval argument (`5m`, `'1d'`, `"10s"`; units ms s m h d w y).
pub fn parse_interval_s(text: &str) -> Result<f64, MacroError> {
    let bad = || MacroError::BadInterval(text.to_owned());
    let t = text.trim().trim_matches(|c| c == '\'' || c == '"');
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    if !is_decimal(number) {
        return Err(bad());
    }
    let factor = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        "y" => 31_536_000.0,
        _ => return Err(bad()),
    };
    number.parse::<f64>().map(|n| n * factor).map_err(|_| bad())
}

/// `\d+(\.\d+)?`
fn is_decimal(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        Some((whole, frac)) => digits(whole) && digits(frac),
        None => digits(s),
    }
}

/// A dashboard variable, as far as interpolation cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variable {
    /// Several values may be chosen.
    pub multi: bool,
    /// "All" is offered.
    pub include_all: bool,
    /// What "All" inserts, raw, when set.
    pub all_value: Option<String>,
    /// The values offered.
    pub options: Vec<String>,
}

/// What is chosen for a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// "All".
    All,
    /// These values.
    Values(Vec<String>),
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// How the MySQL data source inserts a variable: "All" is the custom
/// `allValue` (raw) or every option quoted; a multi or include-All variable
/// its values quoted and comma-separated; a plain one its value raw with `'`
/// doubled.
pub fn format_variable(
    name: &str,
    var: &Variable,
    selected: &Selection,
) -> Result<String, MacroError> {
    match selected {
        Selection::All => Ok(var.all_value.clone().unwrap_or_else(|| {
            var.options
                .iter()
                .filter(|o| o.as_str() != "$__all")
                .map(|o| quote(o))
                .collect::<Vec<_>>()
                .join(",")
        })),
        Selection::Values(values) if var.multi || var.include_all => Ok(values
            .iter()
            .map(|v| quote(v))
            .collect::<Vec<_>>()
            .join(",")),
        Selection::Values(values) => match values.as_slice() {
            [one] => Ok(one.replace('\'', "''")),
            _ => Err(MacroError::SingleValued(name.to_owned())),
        },
    }
}

/// The variables of a dashboard with what is chosen for each.
pub type Variables = BTreeMap<String, (Variable, Selection)>;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Length in bytes of the run of word characters at the start of `s`.
fn word_len(s: &str) -> usize {
    s.find(|c: char| !is_word(c)).unwrap_or(s.len())
}

/// A variable reference at the start of `s`: `$name`, `${name}` or
/// `${name:format}`, `[[name]]` or `[[name:format]]`; its name and length.
fn variable_at(s: &str) -> Option<(&str, usize)> {
    if let Some(rest) = s.strip_prefix("${") {
        let n = word_len(rest);
        if n == 0 {
            return None;
        }
        let after = &rest[n..];
        let close = if after.starts_with(':') {
            after.find('}')?
        } else if after.starts_with('}') {
            0
        } else {
            return None;
        };
        return Some((&rest[..n], 2 + n + close + 1));
    }
    if let Some(rest) = s.strip_prefix('$') {
        let n = word_len(rest);
        return (n > 0).then(|| (&rest[..n], 1 + n));
    }
    let rest = s.strip_prefix("[[")?;
    let n = word_len(rest);
    if n == 0 {
        return None;
    }
    let after = &rest[n..];
    let format = match after.strip_prefix(':') {
        Some(f) => {
            let m = word_len(f);
            if m == 0 {
                return None;
            }
            1 + m
        }
        None => 0,
    };
    after[format..]
        .starts_with("]]")
        .then(|| (&rest[..n], 2 + n + format + 2))
}

/// Step 1 (frontend): `$var`, `${var}`, `[[var]]`, `$__interval`, `$__interval_ms`.
pub fn replace_variables(
    sql: &str,
    variables: &Variables,
    interval_ms: u64,
) -> Result<String, MacroError> {
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        let rest = &sql[i..];
        if let Some((name, len)) = variable_at(rest) {
            let text = &rest[..len];
            match name {
                "__interval" => out.push_str(&interval_text(interval_ms)),
                "__interval_ms" => out.push_str(&interval_ms.to_string()),
                _ => match variables.get(name) {
                    Some((var, selected)) => out.push_str(&format_variable(name, var, selected)?),
                    // Not a variable: a macro or literal text.
                    None => out.push_str(text),
                },
            }
            i += len;
        } else {
            let c = rest.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[..c]);
            i += c;
        }
    }
    Ok(out)
}

/// A macro call at the start of `s` (`$name(args)`): name, raw arguments, length.
fn macro_at(s: &str) -> Option<(&str, &str, usize)> {
    let rest = s.strip_prefix('$')?;
    let n = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if n == 0 || !rest[n..].starts_with('(') {
        return None;
    }
    let args_start = n + 1;
    let close = rest[args_start..].find(')')?;
    Some((
        &rest[..n],
        &rest[args_start..args_start + close],
        1 + args_start + close + 1,
    ))
}

/// Every macro call of `sql`, in order.
fn macros(sql: &str) -> Vec<(usize, &str, &str, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = sql[i..].find('$') {
        let start = i + at;
        if let Some((name, args, len)) = macro_at(&sql[start..]) {
            found.push((start, name, args, len));
            i = start + len;
        } else {
            i = start + 1;
        }
    }
    found
}

fn group(args: &[&str], expr: &str, name: &str) -> Result<String, MacroError> {
    let [_, interval, rest @ ..] = args else {
        return Err(MacroError::GroupArgs(name.to_owned()));
    };
    let secs = parse_interval_s(interval)?;
    if let [fill] = rest {
        let number = fill.strip_prefix('-').unwrap_or(fill);
        if !(*fill == "NULL" || *fill == "previous" || is_decimal(number)) {
            return Err(MacroError::BadFill((*fill).to_owned()));
        }
    }
    Ok(format!("{expr} DIV {secs:.0} * {secs:.0}"))
}

fn expand_one(name: &str, args: &[&str], f: i64, t: i64) -> Result<String, MacroError> {
    let column = || {
        args.first()
            .copied()
            .ok_or_else(|| MacroError::NoColumn(name.to_owned()))
    };
    const NANO: i64 = 1_000_000_000;
    Ok(match name {
        "__timeFilter" => format!(
            "{} BETWEEN FROM_UNIXTIME({f}) AND FROM_UNIXTIME({t})",
            column()?
        ),
        "__timeFrom" => format!("FROM_UNIXTIME({f})"),
        "__timeTo" => format!("FROM_UNIXTIME({t})"),
        "__time" | "__timeEpoch" => format!("UNIX_TIMESTAMP({}) as time_sec", column()?),
        "__timeGroup" => group(args, &format!("UNIX_TIMESTAMP({})", column()?), name)?,
        "__timeGroupAlias" => {
            group(args, &format!("UNIX_TIMESTAMP({})", column()?), name)? + " AS \"time\""
        }
        "__unixEpochFilter" => {
            let c = column()?;
            format!("{c} >= {f} AND {c} <= {t}")
        }
        "__unixEpochNanoFilter" => {
            let c = column()?;
            format!("{c} >= {} AND {c} <= {}", f * NANO, t * NANO)
        }
        "__unixEpochNanoFrom" => (f * NANO).to_string(),
        "__unixEpochNanoTo" => (t * NANO).to_string(),
        "__unixEpochGroup" => group(args, column()?, name)?,
        "__unixEpochGroupAlias" => group(args, column()?, name)? + " AS \"time\"",
        _ => return Err(MacroError::Unknown(name.to_owned())),
    })
}

/// Steps 2 and 3 (backend), for the range `from_s`..`to_s` (UTC epoch seconds).
pub fn expand_macros(
    sql: &str,
    from_s: i64,
    to_s: i64,
    interval_ms: u64,
) -> Result<String, MacroError> {
    let sql = sql
        .replace("$__interval_ms", &interval_ms.to_string())
        .replace("$__interval", &interval_text(interval_ms))
        .replace("$__unixEpochFrom()", &from_s.to_string())
        .replace("$__unixEpochTo()", &to_s.to_string());
    let mut out = String::with_capacity(sql.len() + 64);
    let mut done = 0;
    for (start, name, raw, len) in macros(&sql) {
        out.push_str(&sql[done..start]);
        let args: Vec<&str> = if raw.trim().is_empty() {
            Vec::new()
        } else {
            raw.split(',').map(str::trim).collect()
        };
        out.push_str(&expand_one(name, &args, from_s, to_s)?);
        done = start + len;
    }
    out.push_str(&sql[done..]);
    Ok(out)
}

/// Grafana refuses queries that read the connection's identity or grants:
/// `\buser\s*\(|current_user|session_user|system_user|show\s+grants`, any case.
fn restricted(sql: &str) -> bool {
    let lower = sql.to_lowercase();
    if ["current_user", "session_user", "system_user"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return true;
    }
    let user_call = lower.match_indices("user").any(|(at, _)| {
        let word_starts = !lower[..at].chars().next_back().is_some_and(is_word);
        word_starts && lower[at + 4..].trim_start().starts_with('(')
    });
    let show_grants = lower.match_indices("show").any(|(at, _)| {
        let rest = &lower[at + 4..];
        rest.starts_with(char::is_whitespace) && rest.trim_start().starts_with("grants")
    });
    user_call || show_grants
}

/// The SQL Grafana sends for this range (UTC epoch seconds), these variables and interval.
pub fn interpolate(
    sql: &str,
    variables: &Variables,
    from_s: i64,
    to_s: i64,
    interval_ms: u64,
) -> Result<String, MacroError> {
    if restricted(sql) {
        return Err(MacroError::Restricted);
    }
    if let Some((start, _, _, len)) = macros(sql)
        .into_iter()
        .find(|(_, _, args, _)| args.contains('('))
    {
        return Err(MacroError::Parenthesis(sql[start..start + len].to_owned()));
    }
    let sql = replace_variables(sql, variables, interval_ms)?;
    expand_macros(&sql, from_s, to_s, interval_ms)
}

#[cfg(test)]
#[path = "grafana_tests.rs"]
mod tests;
