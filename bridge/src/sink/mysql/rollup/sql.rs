//! The rollups' statements. Names come from the static series definitions
//! and validated tier labels, never from input, so they are written in.

use super::series::Series;
use crate::config::Tier;

/// The table that serialises writers of one device's coarsest bucket.
pub const CLAIMS: &str = "rollup_claims";

/// The start of `column`'s bucket of `seconds`, counted from the epoch
/// without the session's time zone (DATETIMEs here are UTC).
pub fn floor(column: &str, seconds: u32) -> String {
    format!(
        "TIMESTAMPADD(SECOND, FLOOR(TIMESTAMPDIFF(SECOND, '1970-01-01', {column}) / {seconds}) * {seconds}, TIMESTAMP'1970-01-01 00:00:00')"
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

/// Recomputes the buckets of `tier` whose raw rows match `condition` (over
/// the raw table's columns) from the raw rows: count, sum, min, max and the
/// value of the latest row, which the join finds by its unique (key, time).
pub fn refresh_from_raw(series: &Series, tier: &Tier, condition: &str) -> String {
    let (insert, update) = upsert(series, tier);
    let keys: Vec<String> = series.key_names().map(|k| format!("`{k}`")).collect();
    let gkeys: Vec<String> = series.key_names().map(|k| format!("g.`{k}`")).collect();
    let (v, t) = (series.value, series.time);
    let counts: String = series
        .counts
        .iter()
        .map(|(c, raw)| format!(", COUNT(`{raw}`) AS `{c}`"))
        .collect();
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
        "{insert}SELECT {gkeys}, g.bucket, g.n, g.total, g.lo, g.hi, r.`{v}`, g.last_time{carried}{gcounts} \
         FROM (SELECT {keys}, {bucket} AS bucket, COUNT(*) AS n, SUM(`{v}`) AS total, \
         MIN(`{v}`) AS lo, MAX(`{v}`) AS hi, MAX(`{t}`) AS last_time{counts} \
         FROM `{table}` WHERE `{v}` IS NOT NULL AND {condition} GROUP BY {keys}, bucket) g \
         JOIN `{table}` r ON {join} AND r.`{t}` = g.last_time{update}",
        gkeys = gkeys.join(", "),
        keys = keys.join(", "),
        bucket = floor(&format!("`{t}`"), tier.seconds),
        table = series.table,
        join = key_join(series, "g", "r"),
    )
}

/// Recomputes the buckets of `tier` from those of `finer` that match
/// `condition` (over the finer table's columns): sums of counts and sums,
/// min of mins, max of maxes, and the last value of the finer bucket that
/// holds the latest time.
pub fn refresh_from_finer(series: &Series, finer: &Tier, tier: &Tier, condition: &str) -> String {
    let (insert, update) = upsert(series, tier);
    let keys: Vec<String> = series.key_names().map(|k| format!("`{k}`")).collect();
    let gkeys: Vec<String> = series.key_names().map(|k| format!("g.`{k}`")).collect();
    let counts: String = series
        .counts
        .iter()
        .map(|(c, _)| format!(", SUM(`{c}`) AS `{c}`"))
        .collect();
    let gcounts: String = series
        .counts
        .iter()
        .map(|(c, _)| format!(", g.`{c}`"))
        .collect();
    let carried: String = series
        .carried
        .iter()
        .map(|c| format!(", f.`{}`", c.name))
        .collect();
    format!(
        "{insert}SELECT {gkeys}, g.bucket, g.n, g.total, g.lo, g.hi, f.`last_value`, g.last_time{carried}{gcounts} \
         FROM (SELECT {keys}, {bucket} AS bucket, SUM(`n`) AS n, SUM(`total`) AS total, \
         MIN(`min_value`) AS lo, MAX(`max_value`) AS hi, MAX(`last_time`) AS last_time{counts} \
         FROM `{finer_table}` WHERE {condition} GROUP BY {keys}, {bucket}) g \
         JOIN `{finer_table}` f ON {join} AND f.`bucket` = {last_bucket} AND f.`last_time` = g.last_time{update}",
        gkeys = gkeys.join(", "),
        keys = keys.join(", "),
        bucket = floor("`bucket`", tier.seconds),
        finer_table = series.tier_table(finer),
        join = key_join(series, "g", "f"),
        last_bucket = floor("g.last_time", finer.seconds),
    )
}

/// The raw rows' aggregate per key and bucket of `seconds`, in the tier
/// tables' column order (keys as bytes), for rows matching `condition`.
pub fn aggregate_raw(series: &Series, seconds: u32, condition: &str) -> String {
    let keys: Vec<String> = series.key_names().map(|k| format!("`{k}`")).collect();
    let gkeys: Vec<String> = series
        .key_names()
        .map(|k| format!("CAST(g.`{k}` AS BINARY)"))
        .collect();
    let (v, t) = (series.value, series.time);
    format!(
        "SELECT {gkeys}, g.bucket, g.n, g.total, g.lo, g.hi, r.`{v}`, g.last_time, g.counted \
         FROM (SELECT {keys}, {bucket} AS bucket, COUNT(*) AS n, SUM(`{v}`) AS total, \
         MIN(`{v}`) AS lo, MAX(`{v}`) AS hi, MAX(`{t}`) AS last_time, {counted} AS counted \
         FROM `{table}` WHERE `{v}` IS NOT NULL AND {condition} GROUP BY {keys}, bucket) g \
         JOIN `{table}` r ON {join} AND r.`{t}` = g.last_time",
        gkeys = gkeys.join(", "),
        keys = keys.join(", "),
        bucket = floor(&format!("`{t}`"), seconds),
        counted = counted_raw(series),
        table = series.table,
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

/// The series' extra count of raw rows as one column (0 when it has none).
fn counted_raw(series: &Series) -> String {
    series
        .counts
        .first()
        .map_or("CAST(0 AS SIGNED)".to_owned(), |(_, raw)| {
            format!("CAST(COUNT(`{raw}`) AS SIGNED)")
        })
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
        assert!(up.contains("f.`tags`"), "{up}");
        // In GROUP BY a bare `bucket` names the finer table's column, not the
        // coarser bucket computed from it: each minute would overwrite the hour.
        assert!(!up.contains(", bucket)"), "{up}");
        assert!(
            up.contains(&format!(
                "GROUP BY `device`, `field`, `tags_key`, {})",
                floor("`bucket`", 3600)
            )),
            "{up}"
        );
    }
}
