//! `co2-bridge retime`: moves the stored times of one device's rows by a
//! fixed shift, to repair readings stored at the wrong time (a device that
//! sends its local time without an offset to a bridge reading it in another
//! zone, or a device whose clock was off).
//!
//! It moves the device's rows in every MySQL table a configured route writes
//! (found from the routes' tables and layouts, not from a list of names),
//! and what is derived from them: the completeness records
//! (`reading_gaps.from_time`/`to_time`) that name the times of the readings
//! around a gap. Device announcements (`device_events`) move only on
//! request (`--events`), and then only those stamped by the device's clock:
//! their times carry an offset, so a time-zone mistake never touches them.
//!
//! A run is one transaction over every table: it counts the rows whose new
//! time would land on a row that stays (a unique key collision) before
//! changing anything, refuses or resolves them as told, and moves the rest.
//! A crash or a refusal leaves every table as it was. The selected rows are
//! locked first, so readings of the device that a running bridge writes
//! meanwhile wait for the commit and are not moved: each is moved whole or
//! not at all.

mod plan;
mod report;
mod shift;
mod store;

use std::io::IsTerminal;
use std::time::Duration;

use co2_wire::DeviceId;
use sqlx::{MySqlConnection, MySqlPool};

use crate::config::{ConfigError, Settings};
use crate::sink::mysql::rollup::{Rollups, Series};
use crate::sink::mysql::schema;
pub use plan::{Plan, Table};
pub use report::{Report, TableReport};
pub use shift::{Shift, ShiftError, TimeBound, TimeError, MAX_SHIFT_S};
use store::Shape;
pub use store::{Collision, Loser, Selection, SHOWN_COLLISIONS};

/// How often a run that lost a race with the bridge (a deadlock, a lock
/// wait that timed out, a row that arrived at a target time) is tried again.
const ATTEMPTS: u32 = 3;

/// `co2-bridge retime`'s arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct RetimeArgs {
    /// The device whose rows move.
    #[arg(long)]
    pub device: String,
    /// What to add to the stored times: +5h, -9h, +5h30m, -05:30, +90s
    /// (non-zero, at most 48 h). Not the zone's offset: readings of a New
    /// York device (UTC-05:00) stored as UTC are 5 h early, so +5h.
    #[arg(long, allow_hyphen_values = true, value_name = "SHIFT")]
    pub by: Shift,
    /// Move only rows stored at or after this time (RFC 3339, or UTC as
    /// YYYY-MM-DD[ hh:mm:ss]); times as stored, before the shift.
    #[arg(long, value_name = "T")]
    pub from: Option<TimeBound>,
    /// Move only rows stored before this time (same forms as --from):
    /// give the moment the device's time zone or clock was fixed, so rows
    /// stored right since then stay where they are.
    #[arg(long, value_name = "T")]
    pub to: Option<TimeBound>,
    /// Move only the tables of this route (repeatable; default: every route).
    #[arg(long = "route", value_name = "NAME")]
    pub routes: Vec<String>,
    /// When a row would land on a stored row that does not move: refuse
    /// (change nothing, exit 1), keep-stored (delete the moving row) or
    /// replace (delete the stored row).
    #[arg(long, value_enum, default_value_t = OnCollision::Refuse)]
    pub on_collision: OnCollision,
    /// Also move the device's announcements (device_events) that the
    /// device's clock stamped: for a clock that was wrong, not a time zone.
    #[arg(long)]
    pub events: bool,
    /// Print what would move, per table, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

const AFTER_HELP: &str = "\
Set the device's time zone first ([[devices]] time_zone, see \
docs/time-zones.md) or fix its clock, and note when: rows that arrive while \
the old setting is in force are stored wrong again. Then \
move the rows stored before that moment with --to; try --dry-run first. \
Readings the bridge stores during the run wait for it and are not moved. \
A zone with daylight saving time needs one run per offset (e.g. +5h for \
winter, +4h for summer, each with its --from/--to).";

/// What to do about a row whose new time is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnCollision {
    /// Change nothing and say which rows collide.
    Refuse,
    /// Keep the row already stored at the target time; the moving one is deleted.
    KeepStored,
    /// Delete the stored row; the moving one takes its place.
    Replace,
}

/// Why a retime changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RetimeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--device` is not a device id.
    #[error("--device {0:?} is not a device id (1-64 of A-Z a-z 0-9 _ -)")]
    BadDevice(String),
    /// `--from` is not before `--to`.
    #[error("--from {from} is not before --to {to}: no row is selected")]
    EmptyRange {
        /// `--from`.
        from: chrono::NaiveDateTime,
        /// `--to`.
        to: chrono::NaiveDateTime,
    },
    /// `--route` names no route.
    #[error("--route {name:?}: no such route; the routes are {known}")]
    UnknownRoute {
        /// The name given.
        name: String,
        /// The configured routes.
        known: String,
    },
    /// A route whose rows retime cannot move.
    #[error("{0}")]
    Unsupported(String),
    /// No selected route writes a MySQL table with a device and a time.
    #[error("no selected route writes device rows to a MySQL table; nothing to move")]
    NothingToMove,
    /// The routes write to more than one database.
    #[error(
        "the routes write to more than one MySQL sink: {0}. One transaction cannot span two \
         databases; run once per sink with --route"
    )]
    SeveralDatabases(String),
    /// A table is not as its routes say.
    #[error("{0}")]
    Schema(String),
    /// Rows would collide and `--on-collision refuse` is in force.
    #[error(
        "{0} row(s) would land on stored rows that do not move; nothing changed. Pass \
         --on-collision keep-stored or replace, or narrow --from/--to"
    )]
    Refused(u64),
    /// The database failed.
    #[error("database: {0}")]
    Database(sqlx::Error),
}

// Not `#[from]`: that makes the sqlx error the source too, and its text
// would be printed twice in a chain that already shows it.
impl From<sqlx::Error> for RetimeError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

/// Runs `args` against the database `settings` name; the report says what
/// moved (or would, or would collide). A refusal is a report too:
/// [`Report::outcome`] turns it into [`RetimeError::Refused`].
pub async fn run(settings: &Settings, args: &RetimeArgs) -> Result<Report, RetimeError> {
    DeviceId::parse(&args.device).map_err(|_| RetimeError::BadDevice(args.device.clone()))?;
    let (from, to) = (args.from.map(|b| b.0), args.to.map(|b| b.0));
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(RetimeError::EmptyRange { from, to });
        }
    }
    let plan = Plan::new(settings, &args.routes, args.events)?;
    if to.is_none() && !args.dry_run {
        tracing::warn!(
            device = %args.device,
            "No --to: every stored row of the device from --from on moves, including rows \
             stored correctly since its time zone or clock was fixed"
        );
    }
    let sel = Selection {
        device: args.device.clone(),
        from,
        to,
        shift: args.by,
    };
    let (pool, _nodes) = schema::pool(&plan.db, &plan.key)?;
    let result = attempts(&pool, &plan, &sel, args).await;
    pool.close().await;
    result
}

/// Runs [`once`] until it does not lose a race with the bridge.
async fn attempts(
    pool: &MySqlPool,
    plan: &Plan,
    sel: &Selection,
    args: &RetimeArgs,
) -> Result<Report, RetimeError> {
    let mut attempt = 1;
    loop {
        match once(pool, plan, sel, args).await {
            Err(RetimeError::Database(e)) if attempt < ATTEMPTS && lost_race(&e) => {
                tracing::warn!(error = %e, attempt, "The retime met the bridge's writes and was rolled back; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// A deadlock, a lock wait timeout, or a duplicate key from a row that
/// arrived at a target time after the collisions were counted: the whole
/// transaction rolled back, and a new attempt sees the new row.
fn lost_race(e: &sqlx::Error) -> bool {
    matches!(schema::mysql_error_number(e), Some(1213 | 1205 | 1062))
}

/// One transaction: count, check collisions, then (unless refused or a dry
/// run) resolve them and move.
async fn once(
    pool: &MySqlPool,
    plan: &Plan,
    sel: &Selection,
    args: &RetimeArgs,
) -> Result<Report, RetimeError> {
    // A dry run cannot write even by mistake: the server refuses it.
    let mut tx = if args.dry_run {
        pool.begin_with("START TRANSACTION READ ONLY").await?
    } else {
        pool.begin().await?
    };
    let mut report = Report::new(plan, sel, args.on_collision, args.dry_run);
    let progress = Progress::new();
    let mut shapes = Vec::new();
    for table in &plan.tables {
        match Shape::read(&mut tx, table).await? {
            Some(shape) => shapes.push(shape),
            None => report.notes.push(format!(
                "{}: no such table (routes {}); nothing there to move",
                table.name,
                table.routes.join(", ")
            )),
        }
    }
    if shapes.is_empty() {
        return Err(RetimeError::Schema(format!(
            "none of the routes' tables exists in sink {}'s database; is database.url right, \
             and the schema migrated (co2-bridge migrate)?",
            plan.sink
        )));
    }
    // Lock every table's selected rows before anything changes.
    for shape in &shapes {
        let (rows, range) = shape.selected_rows(&mut tx, sel, !args.dry_run).await?;
        progress.say(&format!(
            "{}: {rows} row(s) of {} selected",
            shape.table.name, sel.device
        ));
        report
            .tables
            .push(TableReport::new(&shape.table, rows, range));
    }
    for (shape, table) in shapes.iter().zip(&mut report.tables) {
        (table.collisions, table.shown) = shape.collisions(&mut tx, sel).await?;
    }
    report.gaps = if plan.gaps {
        Some(store::gaps(&mut tx, sel, false).await?)
    } else {
        None
    };
    if args.dry_run || (report.collisions() > 0 && args.on_collision == OnCollision::Refuse) {
        tx.rollback().await?;
        return Ok(report);
    }
    for (shape, table) in shapes.iter().zip(&mut report.tables) {
        move_rows(&mut tx, shape, table, sel, args.on_collision).await?;
        progress.say(&format!(
            "{}: {} row(s) moved",
            shape.table.name, table.moved
        ));
    }
    if plan.gaps {
        report.gaps = Some(store::gaps(&mut tx, sel, true).await?);
    }
    if let Some(rollups) = &plan.rollups {
        recompute_rollups(&mut tx, rollups, &shapes, &report.tables, sel).await?;
    }
    tx.commit().await?;
    report.committed = true;
    Ok(report)
}

/// Resolves `shape`'s collisions as told, then moves its rows.
async fn move_rows(
    conn: &mut MySqlConnection,
    shape: &Shape,
    table: &mut TableReport,
    sel: &Selection,
    on_collision: OnCollision,
) -> Result<(), RetimeError> {
    if table.collisions > 0 {
        let loser = match on_collision {
            OnCollision::KeepStored => Loser::Moving,
            OnCollision::Replace => Loser::Stored,
            OnCollision::Refuse => return Err(RetimeError::Refused(table.collisions)),
        };
        table.deleted = shape.resolve(conn, sel, loser).await?;
    }
    table.moved = shape.shift(conn, sel).await?;
    Ok(())
}

/// Recomputes the moved device's rollup buckets, old times and new, in the
/// transaction that moved its rows.
async fn recompute_rollups(
    conn: &mut MySqlConnection,
    rollups: &Rollups,
    shapes: &[Shape],
    tables: &[TableReport],
    sel: &Selection,
) -> Result<(), RetimeError> {
    let shift = chrono::Duration::seconds(sel.shift.seconds());
    for (shape, table) in shapes.iter().zip(tables) {
        let Some(series) = Series::named(&shape.table.name, &shape.table.device, &shape.table.time)
        else {
            continue;
        };
        let Some((first, last)) = table.range else {
            continue;
        };
        let (moved_first, moved_last) = (first + shift, last + shift);
        rollups
            .recompute_device(
                conn,
                series,
                &sel.device,
                first.min(moved_first),
                last.max(moved_last),
            )
            .await?;
    }
    Ok(())
}

/// Progress lines on stderr, when it is a terminal (a log or a pipe gets
/// only the report).
struct Progress {
    on: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
        }
    }

    fn say(&self, line: &str) {
        if self.on {
            eprintln!("retime: {line}");
        }
    }
}
