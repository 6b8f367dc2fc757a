//! The numeric series that have rollups: which table, which columns.

use crate::config::Tier;
use crate::route::Route;

/// A table of raw rows whose numeric column is rolled up per key and bucket.
#[derive(Debug, PartialEq, Eq)]
pub struct Series {
    /// The raw table.
    pub table: &'static str,
    /// The column holding the device; the first of the key, and what a
    /// transaction claims buckets by.
    pub device: &'static str,
    /// The rest of the key (after the device), e.g. a field and its tags.
    pub key: &'static [KeyColumn],
    /// The time column.
    pub time: &'static str,
    /// The rolled-up value; rows where it is NULL do not count.
    pub value: &'static str,
    /// Columns copied from the bucket's last row (not part of the key).
    pub carried: &'static [Carried],
    /// Counts beyond `n`: (rollup column, raw expression counted with `COUNT`).
    pub counts: &'static [(&'static str, &'static str)],
}

/// A key column after the device: its name and its type in the rollup tables.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// The column's name, in the raw table and the rollup tables alike.
    pub name: &'static str,
    /// Its type in the rollup tables (binary: equal bytes are one key, as in raw).
    pub ddl: &'static str,
}

/// A column copied from a bucket's last row.
#[derive(Debug, PartialEq, Eq)]
pub struct Carried {
    /// The column's name, in the raw table and the rollup tables alike.
    pub name: &'static str,
    /// Its type in the rollup tables.
    pub ddl: &'static str,
}

/// `co2_emissions`: one CO2 value per device and time; `numbered` counts the
/// readings that carry a sequence number, for the completeness panel.
pub static CO2: Series = Series {
    table: "co2_emissions",
    device: "device",
    key: &[],
    time: "date_time",
    value: "emissions",
    carried: &[],
    counts: &[("numbered", "seq")],
};

/// `readings`: the long table of JSON fields; numbers and booleans (0/1)
/// count, text (a NULL value) does not.
pub static READINGS: Series = Series {
    table: "readings",
    device: "device",
    key: &[
        KeyColumn {
            name: "field",
            ddl: "VARBINARY(256) NOT NULL",
        },
        KeyColumn {
            name: "tags_key",
            ddl: "VARBINARY(32) NOT NULL",
        },
    ],
    time: "time",
    value: "value",
    carried: &[Carried {
        name: "tags",
        ddl: "JSON NULL",
    }],
    counts: &[],
};

/// `bin_levels`: a bin's fill level; a FULL report (no level) does not count.
pub static BIN_LEVELS: Series = Series {
    table: "bin_levels",
    device: "bin_id",
    key: &[],
    time: "measured_at",
    value: "level",
    carried: &[],
    counts: &[],
};

/// Every series with rollups.
pub static ALL: [&Series; 3] = [&CO2, &READINGS, &BIN_LEVELS];

impl Series {
    /// The series `route` writes, if its table is one of them with the
    /// columns the rollups read (a route may rename columns).
    pub fn of(route: &Route) -> Option<&'static Series> {
        let series = ALL.iter().find(|s| s.table == route.table())?;
        let has = |c: &str| route.column_names().iter().any(|n| n == c);
        let complete = has(series.device)
            && has(series.time)
            && has(series.value)
            && series.key.iter().all(|k| has(k.name));
        complete.then_some(*series)
    }

    /// The series kept of raw `table` whose device and time are the columns
    /// named, if any.
    pub fn named(table: &str, device: &str, time: &str) -> Option<&'static Series> {
        ALL.iter()
            .find(|s| s.table == table && s.device == device && s.time == time)
            .copied()
    }

    /// The table of `tier`, e.g. `co2_emissions_1m`.
    pub fn tier_table(&self, tier: &Tier) -> String {
        format!("{}_{}", self.table, tier.label)
    }

    /// Every key column, the device first.
    pub fn key_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.device).chain(self.key.iter().map(|k| k.name))
    }

    /// `CREATE TABLE IF NOT EXISTS` of its table for `tier`.
    ///
    /// Sums are DOUBLE like the values; an average is `SUM(total) / SUM(n)`,
    /// never a stored average, so tiers combine exactly. `last_time` keeps
    /// microseconds so a later reading always replaces an earlier one.
    pub fn create_table(&self, tier: &Tier) -> String {
        let mut columns = vec![format!(
            "`{}` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL",
            self.device
        )];
        columns.extend(self.key.iter().map(|k| format!("`{}` {}", k.name, k.ddl)));
        columns.push("`bucket` DATETIME NOT NULL".into());
        columns.push("`n` INT UNSIGNED NOT NULL".into());
        for stat in ["total", "min_value", "max_value", "last_value"] {
            columns.push(format!("`{stat}` DOUBLE NOT NULL"));
        }
        columns.push("`last_time` DATETIME(6) NOT NULL".into());
        columns.extend(
            self.carried
                .iter()
                .map(|c| format!("`{}` {}", c.name, c.ddl)),
        );
        columns.extend(
            self.counts
                .iter()
                .map(|(name, _)| format!("`{name}` INT UNSIGNED NOT NULL DEFAULT 0")),
        );
        let key: Vec<String> = self.key_names().map(|k| format!("`{k}`")).collect();
        format!(
            "CREATE TABLE IF NOT EXISTS `{table}` (\n    {columns},\n    \
             PRIMARY KEY ({key}, `bucket`),\n    KEY `idx_bucket` (`bucket`)\n) \
             ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
            table = self.tier_table(tier),
            columns = columns.join(",\n    "),
            key = key.join(", "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_table_is_keyed_by_the_series_key_and_bucket() {
        let tier = Tier::parse("1h").unwrap();
        let ddl = READINGS.create_table(&tier);
        assert!(
            ddl.starts_with("CREATE TABLE IF NOT EXISTS `readings_1h`"),
            "{ddl}"
        );
        assert!(
            ddl.contains("PRIMARY KEY (`device`, `field`, `tags_key`, `bucket`)"),
            "{ddl}"
        );
        assert!(CO2.create_table(&tier).contains("`numbered` INT UNSIGNED"));
        assert!(BIN_LEVELS
            .create_table(&tier)
            .contains("PRIMARY KEY (`bin_id`, `bucket`)"));
    }
}
