//! What an export reads: the table (a route's raw table or one of its rollup
//! tiers), in which database, its columns as the server describes them, and
//! the key that orders its rows in time.

use sqlx::MySqlPool;

use super::ExportError;
use crate::config::{sink_name, DatabaseSettings, Settings, SinkSettings, Tier};
use crate::model::Column;
use crate::route::Routes;
use crate::sink::mysql::rollup::Series;

/// How a column's values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A signed integer.
    Int,
    /// An unsigned integer.
    UInt,
    /// A DOUBLE.
    Float,
    /// A FLOAT.
    Float32,
    /// A DECIMAL, kept as the server's text so no digit changes.
    Decimal,
    /// Text (VARCHAR, TEXT, ENUM, ...).
    Text,
    /// A JSON document (a JSON column, or MariaDB's LONGTEXT checked with JSON_VALID).
    Json,
    /// Bytes (BINARY, VARBINARY, BLOB), written as lowercase hex.
    Binary,
    /// A DATETIME or TIMESTAMP (UTC: every session says `+00:00`), with its
    /// fractional digits.
    Time(u8),
    /// A DATE.
    Date,
    /// Anything else (TIME, YEAR, BIT, ...), read as the server's text of it.
    Other,
}

/// One column of the exported table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Its name, as in the table and in the export's header.
    pub name: String,
    /// How its values are read and written.
    pub kind: Kind,
    /// How large one value may be: what a chunk's row count is cut to.
    pub size: Size,
}

/// How large a column's values may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Size {
    /// At most a few hundred bytes.
    Small,
    /// Up to 64 KiB (TEXT, BLOB) or unbounded text that is small in practice
    /// (JSON documents, bounded by the payload limit).
    Text,
    /// Up to 16 MiB or more (MEDIUMBLOB, LONGBLOB: images).
    Blob,
}

/// Which table an export reads, as asked.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A route's name (its table); default: the CO2 route.
    pub route: Option<String>,
    /// A table that a configured route writes to MySQL.
    pub table: Option<String>,
    /// A rollup tier (`1m`, `1h`, ...) instead of the raw rows.
    pub tier: Option<String>,
}

/// A resolved export source: the table, where it is, and how to walk it.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table's name (checked: it is a route's table or one of its tiers).
    pub name: String,
    /// The config key of its database (`database` or `sinks.<name>`).
    pub sink_key: String,
    /// Its database settings.
    pub db: DatabaseSettings,
    /// The column that names the device.
    pub device: String,
    /// The column that holds the time the export's range applies to.
    pub time: String,
}

impl Source {
    /// The table this names, among those configured routes write to MySQL.
    pub fn resolve(&self, settings: &Settings) -> Result<Table, ExportError> {
        let routes = Routes::from_settings(settings)?;
        let route = match (&self.route, &self.table) {
            (Some(_), Some(_)) => {
                return Err(ExportError::Request(
                    "name a route or a table, not both".into(),
                ))
            }
            (Some(name), None) => routes
                .by_name(name)
                .map(|(_, r)| r)
                .ok_or_else(|| ExportError::Request(format!("no route is named {name:?}")))?,
            (None, Some(table)) => routes.iter().find(|r| r.table() == table).ok_or_else(|| {
                ExportError::Request(format!("no configured route writes table {table:?}"))
            })?,
            (None, None) => routes
                .by_name(crate::config::CO2_ROUTE)
                .map(|(_, r)| r)
                .ok_or_else(|| ExportError::Request("the CO2 route is off; name a route".into()))?,
        };
        let (sink_key, db) = settings
            .sink_settings()
            .into_iter()
            .find_map(|(key, s)| match s {
                SinkSettings::Mysql(db) if sink_name(&key) == route.sink() => Some((key, db)),
                _ => None,
            })
            .ok_or_else(|| {
                ExportError::Request(format!(
                    "route {:?} writes to sink {:?}, which is not a MySQL database",
                    route.name(),
                    route.sink()
                ))
            })?;
        let named = |wanted: &Column| route.column_named(wanted);
        let (Some(device), Some(time)) = (named(&Column::Device), named(&Column::Time)) else {
            return Err(ExportError::Request(format!(
                "table {:?} has no device and time columns to select by",
                route.table()
            )));
        };
        let Some(label) = &self.tier else {
            return Ok(Table {
                name: route.table().to_owned(),
                sink_key,
                db,
                device,
                time,
            });
        };
        let series = Series::of(route).ok_or_else(|| {
            ExportError::Request(format!("table {:?} has no rollups", route.table()))
        })?;
        let tiers = if settings.rollups.enabled {
            settings.rollups.tiers()?
        } else {
            Vec::new()
        };
        let tier: &Tier = tiers.iter().find(|t| &t.label == label).ok_or_else(|| {
            let known: Vec<&str> = tiers.iter().map(|t| t.label.as_str()).collect();
            ExportError::Request(format!(
                "no rollup tier {label:?} (configured: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        Ok(Table {
            name: series.tier_table(tier),
            sink_key,
            db,
            device: series.device.to_owned(),
            time: "bucket".to_owned(),
        })
    }
}

/// The table as the server describes it: columns, the key that orders its
/// rows in time, and the index that holds that order.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Every column, in table order.
    pub columns: Vec<ColumnSpec>,
    /// Positions in `columns` of the ordering key: the time column, then the
    /// primary key's other columns. Unique (it holds the primary key), so a
    /// cursor on it neither skips nor repeats rows that share a time.
    pub key: Vec<usize>,
    /// An index whose first column is the time column. InnoDB appends the
    /// primary key to it, so its order is exactly `key`'s.
    pub time_index: Option<String>,
    /// Position of the device column in `columns`.
    pub device: usize,
}

impl Shape {
    /// Reads the shape of `table` from information_schema.
    pub async fn read(pool: &MySqlPool, table: &Table) -> Result<Self, sqlx::Error> {
        let rows: Vec<(String, String, String, Option<u64>)> = sqlx::query_as(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), \
             CAST(LOWER(COLUMN_TYPE) AS CHAR), CAST(DATETIME_PRECISION AS UNSIGNED) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
        )
        .bind(&table.name)
        .fetch_all(pool)
        .await?;
        // MariaDB's JSON is LONGTEXT with a JSON_VALID check (MySQL's has its
        // own type); the view has no TABLE_NAME on MySQL, which needs none.
        let checks: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(&table.name)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let columns: Vec<ColumnSpec> = rows
            .into_iter()
            .map(|(name, data_type, column_type, precision)| {
                let json = checks
                    .iter()
                    .any(|c| c.to_ascii_lowercase() == format!("json_valid(`{name}`)"));
                let kind = kind(&name, &data_type, &column_type, precision, json);
                let size = match data_type.as_str() {
                    "mediumblob" | "longblob" => Size::Blob,
                    "tinytext" | "text" | "mediumtext" | "longtext" | "json" | "blob" => Size::Text,
                    _ => Size::Small,
                };
                ColumnSpec { name, kind, size }
            })
            .collect();
        if columns.is_empty() {
            return Err(sqlx::Error::Protocol(format!(
                "table {} does not exist (has `co2-bridge migrate` run?)",
                table.name
            )));
        }
        let stats: Vec<(String, String, u64)> = sqlx::query_as(
            "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), \
             CAST(SEQ_IN_INDEX AS UNSIGNED) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        )
        .bind(&table.name)
        .fetch_all(pool)
        .await?;
        let position = |name: &str| columns.iter().position(|c| c.name == name);
        let missing = |what: &str| {
            sqlx::Error::Protocol(format!("table {} has no {what} column", table.name))
        };
        let time = position(&table.time).ok_or_else(|| missing(&table.time))?;
        let device = position(&table.device).ok_or_else(|| missing(&table.device))?;
        let mut key = vec![time];
        for (index, column, _) in &stats {
            if index == "PRIMARY" {
                let at = position(column).ok_or_else(|| missing(column))?;
                if !key.contains(&at) {
                    key.push(at);
                }
            }
        }
        if key.len() == 1 {
            return Err(sqlx::Error::Protocol(format!(
                "table {} has no primary key to order its rows by",
                table.name
            )));
        }
        let time_index = stats
            .iter()
            .find(|(index, column, seq)| index != "PRIMARY" && *seq == 1 && *column == table.time)
            .map(|(index, _, _)| index.clone());
        Ok(Self {
            columns,
            key,
            time_index,
            device,
        })
    }

    /// Rows per chunk: fewer when a row may be large, so that a chunk in
    /// memory stays bounded (a few images, not thousands).
    pub fn chunk_rows(&self, rows: usize) -> usize {
        match self.columns.iter().map(|c| c.size).max() {
            Some(Size::Blob) => rows.min(4),
            Some(Size::Text) => rows.min(1000),
            _ => rows,
        }
    }
}

/// A column's kind from information_schema's `DATA_TYPE` and `COLUMN_TYPE`.
///
/// A VARBINARY holds text compared byte for byte (a rollup tier's `field`)
/// unless it is a digest (`tags_key`, `content_key`: named `*_key`).
fn kind(
    name: &str,
    data_type: &str,
    column_type: &str,
    precision: Option<u64>,
    json: bool,
) -> Kind {
    let unsigned = column_type.contains("unsigned");
    match data_type {
        "varbinary" if !name.ends_with("_key") => Kind::Text,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if unsigned => {
            Kind::UInt
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => Kind::Int,
        "double" | "real" => Kind::Float,
        "float" => Kind::Float32,
        "decimal" | "numeric" => Kind::Decimal,
        "json" => Kind::Json,
        "longtext" if json => Kind::Json,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            Kind::Text
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary,
        "datetime" | "timestamp" => Kind::Time(precision.map_or(0, |p| p.min(6) as u8)),
        "date" => Kind::Date,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_server_types() {
        let k = |data_type, column_type, precision, json| {
            kind("c", data_type, column_type, precision, json)
        };
        assert_eq!(k("bigint", "bigint(20) unsigned", None, false), Kind::UInt);
        assert_eq!(k("int", "int(11)", None, false), Kind::Int);
        assert_eq!(k("double", "double(7,2)", None, false), Kind::Float);
        assert_eq!(k("datetime", "datetime(3)", Some(3), false), Kind::Time(3));
        assert_eq!(k("longtext", "longtext", None, true), Kind::Json);
        assert_eq!(k("longtext", "longtext", None, false), Kind::Text);
        assert_eq!(k("time", "time", None, false), Kind::Other);
        let binary = |name| kind(name, "varbinary", "varbinary(32)", None, false);
        assert_eq!(binary("tags_key"), Kind::Binary);
        assert_eq!(binary("field"), Kind::Text);
    }
}
