//! The statements of a retime against one MySQL database: what a table's
//! unique keys are, which rows are selected, which of them would land on a
//! row that stays, and the moves themselves.
//!
//! Every statement works in the database (no row is read into memory but
//! the few collisions shown), so a table of millions of rows moves in a
//! handful of statements inside one transaction.

use chrono::NaiveDateTime;
use sqlx::mysql::MySqlArguments;
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{MySql, MySqlConnection, Row};

use crate::sink::mysql::quoted;

use super::plan::Table;
use super::shift::Shift;
use super::RetimeError;

/// How many collisions a report lists (it counts them all).
pub const SHOWN_COLLISIONS: i64 = 5;

/// Which rows move, and by how much.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The device.
    pub device: String,
    /// Stored times from (inclusive).
    pub from: Option<NaiveDateTime>,
    /// Stored times up to (exclusive).
    pub to: Option<NaiveDateTime>,
    /// The shift.
    pub shift: Shift,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Time(NaiveDateTime),
    Int(i64),
}

/// SQL text with its arguments in placeholder order.
#[derive(Debug, Clone, Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, text: &str, arg: Arg) -> &mut Self {
        self.text.push_str(text);
        self.args.push(arg);
        self
    }

    fn append(&mut self, other: Sql) -> &mut Self {
        self.text.push_str(&other.text);
        self.args.extend(other.args);
        self
    }

    fn query(&self) -> Query<'_, MySql, MySqlArguments> {
        self.args
            .iter()
            .fold(sqlx::query(&self.text), |q, arg| match arg {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Time(t) => q.bind(*t),
                Arg::Int(n) => q.bind(*n),
            })
    }

    fn query_scalar<T>(&self) -> QueryScalar<'_, MySql, T, MySqlArguments>
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        self.args
            .iter()
            .fold(sqlx::query_scalar(&self.text), |q, arg| match arg {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Time(t) => q.bind(*t),
                Arg::Int(n) => q.bind(*n),
            })
    }

    fn query_as<T>(&self) -> QueryAs<'_, MySql, T, MySqlArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        self.args
            .iter()
            .fold(sqlx::query_as(&self.text), |q, arg| match arg {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Time(t) => q.bind(*t),
                Arg::Int(n) => q.bind(*n),
            })
    }
}

/// A table as the database has it.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The table as planned.
    pub table: Table,
    /// Each unique key that holds the time column: its other columns.
    keys: Vec<Vec<String>>,
    /// Those other columns, each once, and whether to show them as hex.
    shown: Vec<(String, bool)>,
}

/// One selected row that would land on a row that stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// Its device.
    pub device: String,
    /// Its stored time.
    pub time: NaiveDateTime,
    /// The other columns of the key, `column=value`.
    pub key: Vec<String>,
}

/// Which of two colliding rows goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loser {
    /// The selected row (the stored one keeps its place).
    Moving,
    /// The stored row (the selected one takes its place).
    Stored,
}

impl Shape {
    /// Reads `table`'s columns and unique keys; `None` when there is no such table.
    pub async fn read(
        conn: &mut MySqlConnection,
        table: &Table,
    ) -> Result<Option<Self>, RetimeError> {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(&table.name)
        .fetch_all(&mut *conn)
        .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let has = |c: &str| columns.iter().any(|(n, _)| n.eq_ignore_ascii_case(c));
        for column in [
            Some(&table.device),
            Some(&table.time),
            table.device_stamped.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !has(column) {
                return Err(RetimeError::Schema(format!(
                    "table {} has no column {column} (routes {} say it does)",
                    table.name,
                    table.routes.join(", ")
                )));
            }
        }
        let parts: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        )
        .bind(&table.name)
        .fetch_all(&mut *conn)
        .await?;
        let mut indexes: Vec<(String, Vec<String>)> = Vec::new();
        for (index, column) in parts {
            match indexes.iter_mut().find(|(i, _)| *i == index) {
                Some((_, cs)) => cs.push(column),
                None => indexes.push((index, vec![column])),
            }
        }
        // A key holding the AUTO_INCREMENT id (the (id, time) primary key
        // that time partitions need) is never hit: each row keeps its own id.
        let generated: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND EXTRA LIKE '%auto_increment%'",
        )
        .bind(&table.name)
        .fetch_all(&mut *conn)
        .await?;
        // Only keys holding the time can be hit by moving it.
        let keys: Vec<Vec<String>> = indexes
            .into_iter()
            .map(|(_, cs)| cs)
            .filter(|cs| cs.iter().any(|c| c.eq_ignore_ascii_case(&table.time)))
            .filter(|cs| {
                !cs.iter()
                    .any(|c| generated.iter().any(|g| g.eq_ignore_ascii_case(c)))
            })
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| !c.eq_ignore_ascii_case(&table.time))
                    .collect()
            })
            .collect();
        let mut shown: Vec<(String, bool)> = Vec::new();
        for column in keys.iter().flatten() {
            if column.eq_ignore_ascii_case(&table.device) || shown.iter().any(|(c, _)| c == column)
            {
                continue;
            }
            let binary = columns.iter().any(|(n, t)| {
                n == column && matches!(t.as_str(), "binary" | "varbinary" | "blob" | "tinyblob")
            });
            shown.push((column.clone(), binary));
        }
        Ok(Some(Self {
            table: table.clone(),
            keys,
            shown,
        }))
    }

    /// `alias`'s row is selected: the device, the range, and for
    /// announcements a time of the device's own.
    fn selected(&self, sel: &Selection, alias: &str) -> Sql {
        let column = |c: &str| match alias {
            "" => quoted(c),
            a => format!("{a}.{}", quoted(c)),
        };
        let time = column(&self.table.time);
        let mut sql = Sql::default();
        sql.bind(
            &format!("{} = ?", column(&self.table.device)),
            Arg::Text(sel.device.clone()),
        );
        if let Some(from) = sel.from {
            sql.bind(&format!(" AND {time} >= ?"), Arg::Time(from));
        }
        if let Some(to) = sel.to {
            sql.bind(&format!(" AND {time} < ?"), Arg::Time(to));
        }
        if let Some(body) = &self.table.device_stamped {
            // `"at": null`: stamped on arrival, which is right whatever the device's clock said.
            sql.push(&format!(
                " AND JSON_TYPE(JSON_EXTRACT({}, '$.at')) = 'STRING'",
                column(body)
            ));
        }
        sql
    }

    /// `s` sits where `m` would land on key `key`, and is not itself moving.
    fn lands_on(&self, sel: &Selection, key: &[String]) -> Sql {
        let mut sql = Sql::default();
        for c in key {
            sql.push(&format!("s.{0} = m.{0} AND ", quoted(c)));
        }
        sql.bind(
            &format!(
                "s.{0} = m.{0} + INTERVAL ? SECOND",
                quoted(&self.table.time)
            ),
            Arg::Int(sel.shift.seconds()),
        );
        sql.push(" AND (")
            .append(self.selected(sel, "s"))
            .push(") IS NOT TRUE");
        sql
    }

    /// The selected rows `m` that would land on a row that stays (any key).
    fn colliding(&self, sel: &Selection) -> Option<Sql> {
        if self.keys.is_empty() {
            return None;
        }
        let table = quoted(&self.table.name);
        let mut sql = Sql::default();
        sql.push(&format!("FROM {table} m WHERE "))
            .append(self.selected(sel, "m"))
            .push(" AND (");
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push(&format!("EXISTS (SELECT 1 FROM {table} s WHERE "))
                .append(self.lands_on(sel, key))
                .push(")");
        }
        sql.push(")");
        Some(sql)
    }

    /// How many rows are selected, and their first and last time. With
    /// `lock`, the rows (and the gaps between them) are locked until the
    /// transaction ends, so the bridge's rows of this device wait rather
    /// than arrive halfway through.
    pub async fn selected_rows(
        &self,
        conn: &mut MySqlConnection,
        sel: &Selection,
        lock: bool,
    ) -> Result<(u64, Option<(NaiveDateTime, NaiveDateTime)>), RetimeError> {
        let time = quoted(&self.table.time);
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT COUNT(*), MIN({time}), MAX({time}) FROM {} WHERE ",
            quoted(&self.table.name)
        ))
        .append(self.selected(sel, ""));
        if lock {
            sql.push(" FOR UPDATE");
        }
        let (n, first, last): (i64, Option<NaiveDateTime>, Option<NaiveDateTime>) =
            sql.query_as().fetch_one(&mut *conn).await?;
        Ok((u64::try_from(n).unwrap_or(0), first.zip(last)))
    }

    /// How many selected rows would land on a row that stays, and the first few.
    pub async fn collisions(
        &self,
        conn: &mut MySqlConnection,
        sel: &Selection,
    ) -> Result<(u64, Vec<Collision>), RetimeError> {
        let Some(colliding) = self.colliding(sel) else {
            return Ok((0, Vec::new()));
        };
        let mut count = Sql::default();
        count.push("SELECT COUNT(*) ").append(colliding.clone());
        let n: i64 = count.query_scalar().fetch_one(&mut *conn).await?;
        if n == 0 {
            return Ok((0, Vec::new()));
        }
        let mut list = Sql::default();
        list.push(&format!(
            "SELECT CAST(m.{} AS CHAR), m.{}",
            quoted(&self.table.device),
            quoted(&self.table.time)
        ));
        for (c, binary) in &self.shown {
            if *binary {
                list.push(&format!(", HEX(m.{})", quoted(c)));
            } else {
                list.push(&format!(", CAST(m.{} AS CHAR)", quoted(c)));
            }
        }
        list.append(colliding).bind(
            &format!(" ORDER BY m.{} LIMIT ?", quoted(&self.table.time)),
            Arg::Int(SHOWN_COLLISIONS),
        );
        let rows = list.query().fetch_all(&mut *conn).await?;
        let mut shown = Vec::new();
        for row in &rows {
            let mut key = Vec::new();
            for (i, (c, _)) in self.shown.iter().enumerate() {
                let value: Option<String> = row.try_get(i + 2)?;
                let value = value.unwrap_or_else(|| "NULL".to_owned());
                let short: String = value.chars().take(40).collect();
                key.push(format!("{c}={short}"));
            }
            shown.push(Collision {
                device: row.try_get(0)?,
                time: row.try_get(1)?,
                key,
            });
        }
        Ok((u64::try_from(n).unwrap_or(0), shown))
    }

    /// Deletes one row of each colliding pair; returns how many went.
    pub async fn resolve(
        &self,
        conn: &mut MySqlConnection,
        sel: &Selection,
        loser: Loser,
    ) -> Result<u64, RetimeError> {
        let table = quoted(&self.table.name);
        let mut deleted = 0;
        for key in &self.keys {
            // A self-join DELETE, not DELETE ... WHERE EXISTS: MySQL refuses a
            // subquery on the table being deleted from (error 1093).
            let mut sql = Sql::default();
            let gone = match loser {
                Loser::Moving => "m",
                Loser::Stored => "s",
            };
            sql.push(&format!("DELETE {gone} FROM {table} m JOIN {table} s ON "))
                .append(self.lands_on(sel, key))
                .push(" WHERE ")
                .append(self.selected(sel, "m"));
            deleted += sql.query().execute(&mut *conn).await?.rows_affected();
        }
        Ok(deleted)
    }

    /// Moves the selected rows; returns how many moved.
    ///
    /// The rows go in the shift's direction, farthest first: InnoDB checks a
    /// unique key row by row, so moving 10:00 to 11:00 while 11:00 (itself
    /// selected) has not yet moved to 12:00 would be a duplicate. Moving
    /// 11:00 first leaves 10:00 a free place.
    pub async fn shift(
        &self,
        conn: &mut MySqlConnection,
        sel: &Selection,
    ) -> Result<u64, RetimeError> {
        let time = quoted(&self.table.time);
        let order = if sel.shift.seconds() > 0 {
            "DESC"
        } else {
            "ASC"
        };
        let mut sql = Sql::default();
        sql.bind(
            &format!(
                "UPDATE {} SET {time} = {time} + INTERVAL ? SECOND WHERE ",
                quoted(&self.table.name)
            ),
            Arg::Int(sel.shift.seconds()),
        )
        .append(self.selected(sel, ""))
        .push(&format!(" ORDER BY {time} {order}"));
        Ok(sql.query().execute(&mut *conn).await?.rows_affected())
    }
}

/// The completeness records of the device whose `from_time` or `to_time`
/// (the times of the readings around a gap) are selected: counted, and with
/// `apply` moved. Each column moves on its own, like the reading it names.
pub async fn gaps(
    conn: &mut MySqlConnection,
    sel: &Selection,
    apply: bool,
) -> Result<u64, RetimeError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'reading_gaps'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if exists == 0 {
        return Ok(0);
    }
    let in_range = |column: &str| {
        let mut sql = Sql::default();
        sql.push(&format!("{column} IS NOT NULL"));
        if let Some(from) = sel.from {
            sql.bind(&format!(" AND {column} >= ?"), Arg::Time(from));
        }
        if let Some(to) = sel.to {
            sql.bind(&format!(" AND {column} < ?"), Arg::Time(to));
        }
        sql
    };
    let mut count = Sql::default();
    count
        .bind(
            "SELECT COUNT(*) FROM reading_gaps WHERE device = ? AND ((",
            Arg::Text(sel.device.clone()),
        )
        .append(in_range("from_time"))
        .push(") OR (")
        .append(in_range("to_time"))
        .push("))");
    let n: i64 = count.query_scalar().fetch_one(&mut *conn).await?;
    if apply && n > 0 {
        for column in ["from_time", "to_time"] {
            let mut sql = Sql::default();
            sql.bind(
                &format!("UPDATE reading_gaps SET {column} = {column} + INTERVAL ? SECOND WHERE "),
                Arg::Int(sel.shift.seconds()),
            )
            .bind("device = ? AND ", Arg::Text(sel.device.clone()))
            .append(in_range(column));
            sql.query().execute(&mut *conn).await?;
        }
    }
    Ok(u64::try_from(n).unwrap_or(0))
}
