//! Reading a table in key order, a chunk at a time (keyset pagination).
//!
//! Each chunk is a short query, `… WHERE time > last ORDER BY time LIMIT n`
//! (see [`ChunkQuery`] for rows that share a time), that takes a connection from the pool and gives it back when its rows are
//! in memory. One long streaming query would hold a connection, and an
//! InnoDB read view, for as long as the slowest client takes to read a year
//! of rows (purge waits behind it, and the server's `net_write_timeout` cuts
//! it); OFFSET would read every skipped row again for each chunk. A keyset
//! chunk starts where the last one ended, through the index whose order is
//! the key's, so each costs the same however far in the export is.

use std::cmp::Ordering;

use chrono::{NaiveDate, NaiveDateTime};
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, MySqlPool, Row};

use super::table::{Kind, Shape};
use crate::sink::mysql::quoted;

/// One value as read from the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A DOUBLE.
    Float(f64),
    /// A FLOAT.
    Float32(f32),
    /// Text (also DECIMAL and JSON, as the server wrote them).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A DATETIME or TIMESTAMP, UTC.
    Time(NaiveDateTime),
    /// A DATE.
    Date(NaiveDate),
}

/// Which rows: devices and a half-open time range `[from, to)`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these devices (all when empty).
    pub devices: Vec<String>,
    /// From this time on (inclusive).
    pub from: Option<NaiveDateTime>,
    /// Before this time (exclusive).
    pub to: Option<NaiveDateTime>,
}

/// The statements of one export's chunks.
///
/// SQL orders by the time alone: the tables are partitioned by time, and
/// MariaDB then neither extends a secondary index with the primary key nor
/// sorts by `(time, id)` without a filesort of every row after the cursor
/// (measured: 2 s a chunk of 500 at 300,000 rows). Ordered by time, the
/// time index (or, for one device, the `(device, time)` key) is read in
/// order and the scan stops at the limit. Rows that share a time are put in
/// key order in memory; a chunk never ends inside such a group (the group
/// cut by the limit is left for the next chunk, or read whole when it is
/// the whole chunk), so the key of a chunk's last row is a cursor after
/// which nothing of its time is missing, and a resume from any row's key
/// reads the rest of that row's group first.
#[derive(Debug)]
pub struct ChunkQuery {
    /// The first chunk: `… ORDER BY time LIMIT n`.
    first: String,
    /// A chunk after a time: `… AND time > ? ORDER BY time LIMIT n`.
    next: String,
    /// The rest of a group after a key: `… AND time = ? AND rest > (…) ORDER BY rest`.
    rest: String,
    /// A whole group: `… AND time = ? ORDER BY rest`.
    group: String,
    filter: Filter,
    rows: usize,
}

impl ChunkQuery {
    /// The statements that read `table` (its `shape`) under `filter`, `rows` a chunk.
    pub fn new(table: &str, shape: &Shape, filter: &Filter, rows: usize) -> Self {
        let select: Vec<String> = shape
            .columns
            .iter()
            .map(|c| match c.kind {
                Kind::Other => format!("CAST({} AS CHAR)", quoted(&c.name)),
                _ => quoted(&c.name),
            })
            .collect();
        let key: Vec<String> = shape
            .key
            .iter()
            .filter_map(|&i| shape.columns.get(i))
            .map(|c| quoted(&c.name))
            .collect();
        let time = key.first().cloned().unwrap_or_default();
        let rest = key.get(1..).unwrap_or_default();
        let device = shape
            .columns
            .get(shape.device)
            .map(|c| quoted(&c.name))
            .unwrap_or_default();
        let mut conditions = Vec::new();
        if filter.from.is_some() {
            conditions.push(format!("{time} >= ?"));
        }
        if filter.to.is_some() {
            conditions.push(format!("{time} < ?"));
        }
        if !filter.devices.is_empty() {
            let marks = vec!["?"; filter.devices.len()].join(", ");
            conditions.push(format!("{device} IN ({marks})"));
        }
        // One device: the (device, time) unique key holds its rows in time
        // order and the optimizer finds it. Several or all: walk the time
        // index in order, so a chunk reads its rows and stops, rather than
        // sorting all the devices' rows after the cursor each time.
        let hint = match (&shape.time_index, filter.devices.len()) {
            (Some(index), n) if n != 1 => format!(" FORCE INDEX ({})", quoted(index)),
            _ => String::new(),
        };
        let statement = |extra: &[String], order: &str, limit: bool| {
            let mut all = conditions.clone();
            all.extend_from_slice(extra);
            let filter = if all.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", all.join(" AND "))
            };
            let limit = if limit {
                format!(" LIMIT {rows}")
            } else {
                String::new()
            };
            format!(
                "SELECT {} FROM {}{hint}{filter} ORDER BY {order}{limit}",
                select.join(", "),
                quoted(table),
            )
        };
        let by_rest = rest.join(", ");
        Self {
            first: statement(&[], &time, true),
            next: statement(&[format!("{time} > ?")], &time, true),
            rest: statement(&[format!("{time} = ?"), after(rest)], &by_rest, false),
            group: statement(&[format!("{time} = ?")], &by_rest, false),
            filter: filter.clone(),
            rows,
        }
    }

    /// The next chunk after `cursor` (the key of the last row had; from the
    /// start without), in key order: about a chunk of rows, fewer where a
    /// group of one time was left for the next chunk, more when one group
    /// is larger than a chunk. Empty at the end.
    pub async fn chunk(
        &self,
        pool: &MySqlPool,
        shape: &Shape,
        cursor: Option<&[Cell]>,
    ) -> Result<Vec<Vec<Cell>>, sqlx::Error> {
        let mut out = Vec::new();
        let time = cursor.and_then(<[Cell]>::first);
        if let (Some(cursor), Some(time)) = (cursor, time) {
            let rest = cursor.get(1..).unwrap_or_default();
            let query = bind_after(self.filtered(&self.rest).bind_cell(time), rest);
            out = read(query, pool, shape).await?;
        }
        let query = match time {
            Some(time) => self.filtered(&self.next).bind_cell(time),
            None => self.filtered(&self.first),
        };
        let mut rows = read(query, pool, shape).await?;
        let at = |row: &Vec<Cell>| shape.key.first().and_then(|&i| row.get(i)).cloned();
        if rows.len() == self.rows {
            // The limit may have cut the last time's group: leave it for the
            // next chunk, or read it whole if it is all there is.
            let last = rows.last().and_then(at);
            rows.retain(|row| at(row) != last);
            if rows.is_empty() {
                if let Some(last) = &last {
                    rows = read(self.filtered(&self.group).bind_cell(last), pool, shape).await?;
                }
            }
        }
        rows.sort_by(|a, b| compare_keys(&key_of(shape, a), &key_of(shape, b)));
        out.extend(rows);
        Ok(out)
    }

    /// `sql` with the filter's values bound.
    fn filtered<'q>(&'q self, sql: &'q str) -> Query<'q, MySql, MySqlArguments> {
        let mut query = sqlx::query(sql);
        if let Some(from) = self.filter.from {
            query = query.bind(from);
        }
        if let Some(to) = self.filter.to {
            query = query.bind(to);
        }
        for device in &self.filter.devices {
            query = query.bind(device.as_str());
        }
        query
    }
}

async fn read(
    query: Query<'_, MySql, MySqlArguments>,
    pool: &MySqlPool,
    shape: &Shape,
) -> Result<Vec<Vec<Cell>>, sqlx::Error> {
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(|row| read_row(row, shape)).collect()
}

/// Binding a [`Cell`] as a statement parameter.
trait BindCell<'q> {
    fn bind_cell(self, cell: &'q Cell) -> Self;
}

impl<'q> BindCell<'q> for Query<'q, MySql, MySqlArguments> {
    fn bind_cell(self, cell: &'q Cell) -> Self {
        match cell {
            Cell::Null => self.bind(None::<String>),
            Cell::Int(v) => self.bind(*v),
            Cell::UInt(v) => self.bind(*v),
            Cell::Float(v) => self.bind(*v),
            Cell::Float32(v) => self.bind(*v),
            Cell::Text(v) => self.bind(v.as_str()),
            Cell::Bytes(v) => self.bind(v.as_slice()),
            Cell::Time(v) => self.bind(*v),
            Cell::Date(v) => self.bind(*v),
        }
    }
}

/// Key order as the server has it: numbers by value, text of the key
/// columns (ASCII or binary collations) and bytes byte by byte, times in order.
fn compare_keys(a: &[Cell], b: &[Cell]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x, y) {
            (Cell::Int(x), Cell::Int(y)) => x.cmp(y),
            (Cell::UInt(x), Cell::UInt(y)) => x.cmp(y),
            (Cell::Float(x), Cell::Float(y)) => x.total_cmp(y),
            (Cell::Float32(x), Cell::Float32(y)) => x.total_cmp(y),
            (Cell::Text(x), Cell::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Cell::Bytes(x), Cell::Bytes(y)) => x.cmp(y),
            (Cell::Time(x), Cell::Time(y)) => x.cmp(y),
            (Cell::Date(x), Cell::Date(y)) => x.cmp(y),
            (Cell::Null, Cell::Null) => Ordering::Equal,
            (Cell::Null, _) => Ordering::Less,
            _ => Ordering::Greater,
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// `(k1 > ? OR (k1 = ? AND (k2 > ? OR (k2 = ? AND k3 > ?))))`: the rows after
/// a key.
fn after(key: &[String]) -> String {
    let mut condition = String::new();
    for (i, column) in key.iter().enumerate().rev() {
        condition = if i + 1 == key.len() {
            format!("{column} > ?")
        } else {
            format!("({column} > ? OR ({column} = ? AND {condition}))")
        };
    }
    condition
}

/// Binds a key in the order [`after`] asks for it: each column but the
/// last twice, the last once.
fn bind_after<'q>(
    mut query: Query<'q, MySql, MySqlArguments>,
    key: &'q [Cell],
) -> Query<'q, MySql, MySqlArguments> {
    for (i, cell) in key.iter().enumerate() {
        query = query.bind_cell(cell);
        if i + 1 != key.len() {
            query = query.bind_cell(cell);
        }
    }
    query
}

/// A row's cells, each read as its column's kind.
fn read_row(row: &MySqlRow, shape: &Shape) -> Result<Vec<Cell>, sqlx::Error> {
    let mut cells = Vec::with_capacity(shape.columns.len());
    for (i, column) in shape.columns.iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if sqlx::ValueRef::is_null(&raw) {
            cells.push(Cell::Null);
            continue;
        }
        // Unchecked: the kind comes from the table's own description, and
        // sqlx's integer decoders read any width.
        cells.push(match column.kind {
            Kind::Int => Cell::Int(row.try_get_unchecked(i)?),
            Kind::UInt => Cell::UInt(row.try_get_unchecked(i)?),
            Kind::Float => Cell::Float(row.try_get_unchecked(i)?),
            Kind::Float32 => Cell::Float32(row.try_get_unchecked(i)?),
            // As bytes: a VARBINARY read as text may hold bytes that are
            // not UTF-8 (the bridge writes none), which must not end the export.
            Kind::Decimal | Kind::Text | Kind::Json | Kind::Other => {
                let bytes: Vec<u8> = row.try_get_unchecked(i)?;
                Cell::Text(
                    String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                )
            }
            Kind::Binary => Cell::Bytes(row.try_get_unchecked(i)?),
            Kind::Time(_) => Cell::Time(row.try_get_unchecked(i)?),
            Kind::Date => Cell::Date(row.try_get_unchecked(i)?),
        });
    }
    Ok(cells)
}

/// The key of `row` under `shape`: what the next chunk starts after.
pub fn key_of(shape: &Shape, row: &[Cell]) -> Vec<Cell> {
    shape
        .key
        .iter()
        .map(|&i| row.get(i).cloned().unwrap_or(Cell::Null))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_after_a_key_nest_from_the_first_column() {
        let key = ["`t`".to_owned(), "`d`".to_owned(), "`id`".to_owned()];
        assert_eq!(
            after(&key),
            "(`t` > ? OR (`t` = ? AND (`d` > ? OR (`d` = ? AND `id` > ?))))"
        );
        assert_eq!(after(&key[2..]), "`id` > ?");
    }

    #[test]
    fn ties_at_one_time_sort_as_the_server_orders_the_key() {
        let t = NaiveDate::from_ymd_opt(2024, 5, 1)
            .and_then(|d| d.and_hms_opt(10, 0, 0))
            .unwrap();
        let key =
            |device: &str, id: u64| vec![Cell::Time(t), Cell::Text(device.into()), Cell::UInt(id)];
        // ascii_bin: upper case before lower case; ids by value, not text.
        assert_eq!(compare_keys(&key("B", 9), &key("a", 1)), Ordering::Less);
        assert_eq!(compare_keys(&key("a", 9), &key("a", 10)), Ordering::Less);
        assert_eq!(compare_keys(&key("a", 10), &key("a", 10)), Ordering::Equal);
        let later = [Cell::Time(t + chrono::Duration::milliseconds(1))];
        assert_eq!(compare_keys(&later, &key("a", 1)), Ordering::Greater);
    }
}
