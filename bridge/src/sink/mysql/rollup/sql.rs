//! The rollups' statements. Names come from the static series definitions
//! and validated tier labels, never from input, so they are written in.

use super::series::Series;
use crate::config::Tier;

/// The table that serialises writers of one device's coarsest bucket.
pub const CLAIMS: &str = "rollup_claims";

/// The epoch as a DATETIME: with a string instead, TIMESTAMPADD answers a
/// string, which compares and decodes as one.
const EPOCH: &str = "CAST('1970-01-01' AS DATETIME)";

/// The start of `column`'s bucket of `seconds`, counted from the epoch
/// without the session's time zone (DATETIMEs here are UTC).
pub fn floor(column: &str, seconds: u32) -> String {
    format!(
        "TIMESTAMPADD(SECOND, FLOOR(TIMESTAMPDIFF(SECOND, {EPOCH}, {column}) / {seconds}) * {seconds}, {EPOCH})"
    )
}

/// `((d = ? AND t >= ? AND t < ?) OR ...)` for `spans` spans.
pub fn spans_where(device: &str, time: &str, spans: usize) -> String {
    let one = format!("(`{device}` = ? AND {time} >= ? AND {time} < ?)");
    let mut sql = String::with_capacity(2 + spans * (one.len() + 4));
    sql.push('(');
    for i in 0..spans {
        if i > 0 {
            sql.push_str(" OR ");
        }
        sql.push_str(&one);
    }
    sql.push(')');
    sql
}

/// `INSERT … ON DUPLICATE KEY UPDATE` of one claim per (device, bucket):
/// the row lock makes a second writer of the same buckets wait for this
/// transaction instead of deadlocking with it halfway through.
pub fn claim(claims: usize) -> String {
    let mut sql = format!("INSERT INTO `{CLAIMS}` (`series`, `device`, `bucket`) VALUES ");
    for i in 0..claims {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?)");
    }
    sql.push_str(" ON DUPLICATE KEY UPDATE `bucket` = `bucket`");
    sql
}

/// The columns every tier table has after its key and bucket.
fn stat_columns(series: &Series) -> Vec<String> {
    let mut columns: Vec<String> = [
        "n",
        "total",
        "min_value",
        "max_value",
        "last_value",
        "last_time",
    ]
    .iter()
    .map(|c| (*c).to_owned())
    .collect();
    columns.extend(series.carried.iter().map(|c| c.name.to_owned()));
    columns.extend(series.counts.iter().map(|(c, _)| (*c).to_owned()));
    columns
}

/// `INSERT INTO tier (...) ` and its `ON DUPLICATE KEY UPDATE` tail.
fn upsert(series: &Series, tier: &Tier) -> (String, String) {
    let stats = stat_columns(series);
    let all: Vec<String> = series
        .key_names()
        .map(str::to_owned)
        .chain(std::iter::once("bucket".to_owned()))
        .chain(stats.iter().cloned())
        .map(|c| format!("`{c}`"))
        .collect();
    let update: Vec<String> = stats
        .iter()
        .map(|c| format!("`{c}` = VALUES(`{c}`)"))
        .collect();
    (
        format!(
            "INSERT INTO `{}` ({}) ",
            series.tier_table(tier),
            all.join(", ")
        ),
        format!(" ON DUPLICATE KEY UPDATE {}", update.join(", ")),
    )
}

/// `g.k = r.k AND ...` over the whole key.
fn key_join(series: &Series, g: &str, r: &str) -> String {
    series
        .key_names()
        .map(|k| format!("{r}.`{k}` = {g}.`{k}`"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Where a refresh reads: the raw table, or the tier below.
struct Source {
    /// The table, aliased `s` inside and joined back as `r` for the last row.
    table: String,
    /// The aggregates of one bucket: `n`, `total`, `lo`, `hi`, `last_time`
    /// and the series' counts, over the rows of `s`.
    stats: String,
    /// A condition every counted row meets, with its trailing `AND`.
    filter: String,
    /// The column whose bucket is taken.
    time: String,
    /// The last value, from the joined row `r`.
    last_value: String,
    /// How `r` is the row (or finer bucket) holding `g.last_time`.
    last_row: String,
}

impl Source {
    /// The raw table: count, sum, min, max of the value; the last row is
    /// the one at the latest time (the key and time are unique).
    fn raw(series: &Series) -> Self {
        let (v, t) = (series.value, series.time);
        let counts: String = series
            .counts
            .iter()
            .map(|(c, raw)| format!(", COUNT(`{raw}`) AS `{c}`"))
            .collect();
        Self {
            table: series.table.to_owned(),
            stats: format!(
                "COUNT(*) AS n, SUM(`{v}`) AS total, MIN(`{v}`) AS lo, MAX(`{v}`) AS hi, \
                 MAX(`{t}`) AS last_time{counts}"
            ),
            filter: format!("`{v}` IS NOT NULL AND "),
            time: format!("`{t}`"),
            last_value: format!("r.`{v}`"),
            last_row: format!("r.`{t}` = g.last_time"),
        }
    }

    /// The tier `finer`: sums of counts and sums, min of mins, max of
    /// maxes; the last row is the finer bucket holding the latest time.
    fn finer(series: &Series, finer: &Tier) -> Self {
        let counts: String = series
            .counts
            .iter()
            .map(|(c, _)| format!(", SUM(`{c}`) AS `{c}`"))
            .collect();
        Self {
            table: series.tier_table(finer),
            stats: format!(
                "SUM(`n`) AS n, SUM(`total`) AS total, MIN(`min_value`) AS lo, \
                 MAX(`max_value`) AS hi, MAX(`last_time`) AS last_time{counts}"
            ),
            filter: String::new(),
            time: "`bucket`".to_owned(),
            last_value: "r.`last_value`".to_owned(),
            last_row: format!(
                "r.`bucket` = {} AND r.`last_time` = g.last_time",
                floor("g.last_time", finer.seconds)
            ),
        }
    }
}

/// `INSERT … SELECT` of `tier`'s buckets, recomputed from `source`'s rows
/// that match `condition`, upserted over what was there.
fn refresh(series: &Series, tier: &Tier, source: &Source, condition: &str) -> String {
    let (insert, update) = upsert(series, tier);
    let keys: Vec<String> = series.key_names().map(|k| format!("`{k}`")).collect();
    let gkeys: Vec<String> = series.key_names().map(|k| format!("g.`{k}`")).collect();
    let gcounts: String = series
        .counts
        .iter()
        .map(|(c, _)| format!(", g.`{c}`"))
        .collect();
    let carried: String = series
        .carried
        .iter()
        .map(|c| format!(", r.`{}`", c.name))
        .collect();
    format!(
        "{insert}SELECT {gkeys}, g.tier_bucket, g.n, g.total, g.lo, g.hi, {last_value}, g.last_time{carried}{gcounts} \
         FROM (SELECT {keys}, {bucket} AS tier_bucket, {stats} \
         FROM `{table}` WHERE {filter}{condition} GROUP BY {keys}, tier_bucket) g \
         JOIN `{table}` r ON {join} AND {last_row}{update}",
        gkeys = gkeys.join(", "),
        keys = keys.join(", "),
        bucket = floor(&source.time, tier.seconds),
        stats = source.stats,
        table = source.table,
        filter = source.filter,
        last_value = source.last_value,
        last_row = source.last_row,
        join = key_join(series, "g", "r"),
    )
}

/// The raw rows matching `condition` (read through the primary key, which
/// starts with `id`) that count: their key columns as bytes, value, time,
/// carried columns as text and, per extra count, 1 or 0.
pub fn new_rows(series: &Series, condition: &str) -> String {
    let mut columns: Vec<String> = series
        .key_names()
        .map(|k| format!("CAST(`{k}` AS BINARY)"))
        .collect();
    columns.push(format!("`{}`", series.value));
    columns.push(format!("`{}`", series.time));
    columns.extend(
        series
            .carried
            .iter()
            .map(|c| format!("CAST(`{}` AS CHAR)", c.name)),
    );
    columns.extend(
        series
            .counts
            .iter()
            .map(|(_, raw)| format!("CAST(`{raw}` IS NOT NULL AS SIGNED)")),
    );
    format!(
        "SELECT {} FROM `{}` FORCE INDEX (PRIMARY) WHERE `{}` IS NOT NULL AND {condition}",
        columns.join(", "),
        series.table,
        series.value
    )
}

/// The width of a row of [`add_values`]: keys, bucket, statistics,
/// carried columns and counts.
pub fn tier_width(series: &Series) -> usize {
    series.key_names().count() + 1 + stat_columns(series).len()
}

/// `INSERT … VALUES` of `rows` bucket deltas into `tier`, merged into what
/// is there: count and sum added, min and max widened, the last value
/// replaced only by a later one.
pub fn add_values(series: &Series, tier: &Tier, rows: usize) -> String {
    let (insert, _) = upsert(series, tier);
    let width = tier_width(series);
    // Assignments run left to right and see the columns already updated:
    // last_value (and what is carried with it) is decided before
    // last_time moves.
    let later = "VALUES(`last_time`) >= `last_time`";
    let mut update = vec![
        "`n` = `n` + VALUES(`n`)".to_owned(),
        "`total` = `total` + VALUES(`total`)".to_owned(),
        "`min_value` = LEAST(`min_value`, VALUES(`min_value`))".to_owned(),
        "`max_value` = GREATEST(`max_value`, VALUES(`max_value`))".to_owned(),
        format!("`last_value` = IF({later}, VALUES(`last_value`), `last_value`)"),
    ];
    update.extend(
        series
            .carried
            .iter()
            .map(|c| format!("`{0}` = IF({later}, VALUES(`{0}`), `{0}`)", c.name)),
    );
    update.push("`last_time` = GREATEST(`last_time`, VALUES(`last_time`))".to_owned());
    update.extend(
        series
            .counts
            .iter()
            .map(|(c, _)| format!("`{c}` = `{c}` + VALUES(`{c}`)")),
    );
    let one = format!("({})", vec!["?"; width].join(", "));
    let values = vec![one; rows].join(", ");
    format!(
        "{insert}VALUES {values} ON DUPLICATE KEY UPDATE {}",
        update.join(", ")
    )
}

/// Recomputes the buckets of `tier` whose raw rows match `condition` (over
/// the raw table's columns) from the raw rows.
pub fn refresh_from_raw(series: &Series, tier: &Tier, condition: &str) -> String {
    refresh(series, tier, &Source::raw(series), condition)
}

/// Recomputes the buckets of `tier` from those of `finer` that match
/// `condition` (over the finer table's columns).
pub fn refresh_from_finer(series: &Series, finer: &Tier, tier: &Tier, condition: &str) -> String {
    refresh(series, tier, &Source::finer(series, finer), condition)
}

/// The raw rows' aggregate per key and bucket of `seconds`, in the tier
/// tables' column order (keys as bytes), for rows matching `condition`.
pub fn aggregate_raw(series: &Series, seconds: u32, condition: &str) -> String {
    let source = Source::raw(series);
    let keys: Vec<String> = series.key_names().map(|k| format!("`{k}`")).collect();
    let gkeys: Vec<String> = series
        .key_names()
        .map(|k| format!("CAST(g.`{k}` AS BINARY)"))
        .collect();
    let counted = series
        .counts
        .first()
        .map_or("0".to_owned(), |(c, _)| format!("g.`{c}`"));
    format!(
        "SELECT {gkeys}, g.tier_bucket, g.n, g.total, g.lo, g.hi, {last_value}, g.last_time, \
         CAST({counted} AS SIGNED) \
         FROM (SELECT {keys}, {bucket} AS tier_bucket, {stats} \
         FROM `{table}` WHERE {filter}{condition} GROUP BY {keys}, tier_bucket) g \
         JOIN `{table}` r ON {join} AND {last_row}",
        gkeys = gkeys.join(", "),
        keys = keys.join(", "),
        bucket = floor(&source.time, seconds),
        stats = source.stats,
        table = source.table,
        filter = source.filter,
        last_value = source.last_value,
        last_row = source.last_row,
        join = key_join(series, "g", "r"),
    )
}

/// A tier table's rows in [`aggregate_raw`]'s column order, for buckets
/// matching `condition`.
pub fn stored(series: &Series, tier: &Tier, condition: &str) -> String {
    let keys: Vec<String> = series
        .key_names()
        .map(|k| format!("CAST(`{k}` AS BINARY)"))
        .collect();
    format!(
        "SELECT {keys}, `bucket`, `n`, `total`, `min_value`, `max_value`, `last_value`, `last_time`, {counted} \
         FROM `{table}` WHERE {condition}",
        keys = keys.join(", "),
        counted = counted_stored(series),
        table = series.tier_table(tier),
    )
}

/// A tier table's extra count as one column (0 when it has none).
fn counted_stored(series: &Series) -> String {
    series
        .counts
        .first()
        .map_or("CAST(0 AS SIGNED)".to_owned(), |(column, _)| {
            format!("CAST(`{column}` AS SIGNED)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::mysql::rollup::series::{CO2, READINGS};

    #[test]
    fn spans_bind_three_values_each() {
        let sql = spans_where("device", "`date_time`", 3);
        assert_eq!(sql.matches('?').count(), 9);
        assert_eq!(sql.matches(" OR ").count(), 2);
        assert_eq!(claim(2).matches('?').count(), 6);
    }

    #[test]
    fn a_refresh_updates_every_statistic_and_never_an_average() {
        let minute = Tier::parse("1m").unwrap();
        let hour = Tier::parse("1h").unwrap();
        let raw = refresh_from_raw(&CO2, &minute, "TRUE");
        assert!(raw.starts_with("INSERT INTO `co2_emissions_1m`"), "{raw}");
        assert!(raw.contains("`numbered` = VALUES(`numbered`)"), "{raw}");
        assert!(!raw.to_uppercase().contains("AVG("), "{raw}");
        let up = refresh_from_finer(&READINGS, &minute, &hour, "TRUE");
        assert!(up.contains("FROM `readings_1m`"), "{up}");
        assert!(up.contains("r.`tags`"), "{up}");
    }
}
