//! Which tables hold a device's rows, and in which columns its device and
//! time are: read from the configured routes (their tables and layouts), so
//! a renamed column or a custom table is found like the built-in ones.

use crate::config::routes::FieldKind;
use crate::config::{sink_name, DatabaseSettings, Settings, SinkSettings};
use crate::model::Column;
use crate::route::{Route, Routes, CO2_ROUTE, EVENTS_ROUTE};
use crate::sink::mysql::rollup::Rollups;

use super::RetimeError;

/// One table whose rows of the device move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table's name.
    pub name: String,
    /// The column holding the device id.
    pub device: String,
    /// The column holding the reading's time.
    pub time: String,
    /// Only rows whose announcement carried the device's own time move: the
    /// column holding the announcement (`device_events.body`).
    pub device_stamped: Option<String>,
    /// The routes that write it.
    pub routes: Vec<String>,
}

/// Everything one run moves: tables of one MySQL database.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The sink's name (`mysql` for `[database]`).
    pub sink: String,
    /// Its config key (`database` or `sinks.<name>`), for errors.
    pub key: String,
    /// How to reach it.
    pub db: DatabaseSettings,
    /// The tables, in route order.
    pub tables: Vec<Table>,
    /// The completeness records (`reading_gaps`) follow `co2_emissions`: the
    /// CO2 route's table is among `tables`.
    pub gaps: bool,
    /// What is left alone and why, for the report.
    pub notes: Vec<String>,
    /// The rollups the sink keeps, recomputed where rows moved.
    pub rollups: Option<Rollups>,
}

impl Plan {
    /// The plan for the routes `only` (every route when empty); device
    /// announcements only with `events`.
    pub fn new(settings: &Settings, only: &[String], events: bool) -> Result<Self, RetimeError> {
        let routes = Routes::from_settings(settings)?;
        for name in only {
            if routes.by_name(name).is_none() {
                let known: Vec<&str> = routes.iter().map(Route::name).collect();
                return Err(RetimeError::UnknownRoute {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
        let named = |r: &Route| only.iter().any(|n| n == r.name());
        let sinks = settings.sink_settings();
        let mut groups: Vec<Plan> = Vec::new();
        let mut notes = Vec::new();
        for route in routes.iter().filter(|r| only.is_empty() || named(r)) {
            let (name, sink) = (route.name(), route.sink());
            let db = sinks.iter().find_map(|(key, s)| match s {
                SinkSettings::Mysql(db) if sink_name(key) == sink => Some((key, db)),
                _ => None,
            });
            let Some((key, db)) = db else {
                let why =
                    format!("route {name}: sink {sink} is not MySQL; its points stay as they are");
                if named(route) {
                    return Err(RetimeError::Unsupported(why));
                }
                notes.push(why);
                continue;
            };
            if name == EVENTS_ROUTE && !events {
                let why = "device_events: not moved. Announcements carry their time as UTC \
                           with an offset, or were stamped on arrival, so a time-zone mistake \
                           does not touch them; --events moves those stamped by the device's \
                           clock, when that clock was wrong";
                if named(route) {
                    return Err(RetimeError::Unsupported(why.to_owned()));
                }
                notes.push(why.to_owned());
                continue;
            }
            if route.is_lorawan() {
                let why = format!(
                    "route {name}: LoRaWAN times are the network server's receive times, in \
                     UTC, never a device's clock; not moved"
                );
                if named(route) {
                    return Err(RetimeError::Unsupported(why));
                }
                notes.push(why);
                continue;
            }
            let Some((device, time)) = columns_of(route, settings) else {
                let why = format!(
                    "route {name}: table {} keeps no device or no time of its own; not moved",
                    route.table()
                );
                if named(route) {
                    return Err(RetimeError::Unsupported(why));
                }
                notes.push(why);
                continue;
            };
            let table = Table {
                name: route.table().to_owned(),
                device,
                time,
                device_stamped: (name == EVENTS_ROUTE).then(|| body_column(route)).flatten(),
                routes: vec![name.to_owned()],
            };
            let group = match groups.iter_mut().find(|g| g.sink == sink) {
                Some(group) => group,
                None => {
                    groups.push(Plan {
                        sink: sink.to_owned(),
                        key: key.clone(),
                        db: db.clone(),
                        tables: Vec::new(),
                        gaps: false,
                        notes: Vec::new(),
                        rollups: crate::sink::rollups(settings)?,
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            group.gaps |= name == CO2_ROUTE;
            add_table(&mut group.tables, table)?;
        }
        let mut plan = match groups.len() {
            0 => return Err(RetimeError::NothingToMove),
            1 => groups.remove(0),
            _ => {
                let sinks: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let routes: Vec<&str> = g
                            .tables
                            .iter()
                            .flat_map(|t| t.routes.iter().map(String::as_str))
                            .collect();
                        format!("{} (routes {})", g.sink, routes.join(", "))
                    })
                    .collect();
                return Err(RetimeError::SeveralDatabases(sinks.join("; ")));
            }
        };
        plan.notes = notes;
        Ok(plan)
    }
}

/// Adds `table`, or its route to the same table written by an earlier route.
fn add_table(tables: &mut Vec<Table>, table: Table) -> Result<(), RetimeError> {
    let Some(same) = tables.iter_mut().find(|t| t.name == table.name) else {
        tables.push(table);
        return Ok(());
    };
    let columns = |t: &Table| (t.device.to_ascii_lowercase(), t.time.to_ascii_lowercase());
    if columns(same) != columns(&table) || same.device_stamped != table.device_stamped {
        return Err(RetimeError::Unsupported(format!(
            "routes {} and {} both write table {} but name its device and time columns \
             differently ({}, {} and {}, {}); retime each with --route",
            same.routes.join(", "),
            table.routes.join(", "),
            table.name,
            same.device,
            same.time,
            table.device,
            table.time
        )));
    }
    same.routes.extend(table.routes);
    Ok(())
}

/// The table columns of `route` holding the device and the time: the
/// layout's device and time columns, or for a delimited route its `device`
/// and first `datetime` fields.
fn columns_of(route: &Route, settings: &Settings) -> Option<(String, String)> {
    let layout = route.layout().columns();
    let named = |i: usize| route.column_names().get(i).cloned();
    let position = |wanted: &dyn Fn(&Column) -> bool| layout.iter().position(|(_, c)| wanted(c));
    let mut device = position(&|c| *c == Column::Device).and_then(named);
    let mut time = position(&|c| *c == Column::Time).and_then(named);
    let delimited = settings
        .routes
        .iter()
        .find(|r| r.name == route.name())
        .and_then(|r| r.delimited.as_ref());
    for field in delimited.map_or(&[][..], |d| &d.fields[..]) {
        let slot = match field.kind {
            FieldKind::Device => &mut device,
            FieldKind::Datetime => &mut time,
            _ => continue,
        };
        if slot.is_none() {
            let column = field.column.as_deref()?;
            *slot = layout
                .iter()
                .position(|(logical, _)| logical == column)
                .and_then(named);
        }
    }
    Some((device?, time?))
}

/// The column of an announcement's JSON (`body`).
fn body_column(route: &Route) -> Option<String> {
    let i = route
        .layout()
        .columns()
        .iter()
        .position(|(_, c)| matches!(c, Column::Field(f) if &**f == "body"))?;
    route.column_names().get(i).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped routes example, under a bridge config of `extra` lines.
    fn settings(extra: &str) -> Settings {
        let example = include_str!("../../routes.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, format!("{extra}\n{example}")).unwrap();
        Settings::load_from(Some(&path), Vec::new()).unwrap()
    }

    fn tables(plan: &Plan) -> Vec<(&str, &str, &str)> {
        plan.tables
            .iter()
            .map(|t| (t.name.as_str(), t.device.as_str(), t.time.as_str()))
            .collect()
    }

    #[test]
    fn every_route_table_is_found_with_its_device_and_time_columns() {
        let plan = Plan::new(&settings(""), &[], false).unwrap();
        assert_eq!(plan.sink, "mysql");
        assert!(plan.gaps);
        assert_eq!(
            tables(&plan),
            [
                ("co2_emissions", "device", "date_time"),
                ("bin_levels", "bin_id", "measured_at"),
                ("readings", "device", "time"),
                ("documents", "device", "time"),
                ("images", "device", "time"),
            ]
        );
        let readings = &plan.tables[2];
        assert_eq!(
            readings.routes,
            [
                "dht11",
                "python",
                "tasmota",
                "zigbee2mqtt",
                "buffered",
                "shelly",
                "esphome"
            ]
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.starts_with("device_events: not moved")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn events_move_only_when_asked_and_only_device_stamped_ones() {
        let plan = Plan::new(&settings(""), &[], true).unwrap();
        let events = plan
            .tables
            .iter()
            .find(|t| t.name == "device_events")
            .unwrap();
        assert_eq!(
            (events.device.as_str(), events.time.as_str()),
            ("device", "time")
        );
        assert_eq!(events.device_stamped.as_deref(), Some("body"));
        assert!(plan
            .tables
            .iter()
            .filter(|t| t.name != "device_events")
            .all(|t| t.device_stamped.is_none()));
        let err = Plan::new(&settings(""), &["events".into()], false).unwrap_err();
        assert!(err.to_string().contains("--events"), "{err}");
    }

    #[test]
    fn renamed_columns_are_followed_and_routes_restrict() {
        let mut settings = settings("");
        for r in &mut settings.routes {
            if r.name == "documents" {
                r.columns.insert("time".into(), "taken_at".into());
                r.table = Some("docs".into());
            }
        }
        let plan = Plan::new(&settings, &["documents".into(), "bins".into()], false).unwrap();
        assert_eq!(
            tables(&plan),
            [
                ("bin_levels", "bin_id", "measured_at"),
                ("docs", "device", "taken_at")
            ]
        );
        assert!(!plan.gaps, "no co2_emissions, no completeness records");
        let err = Plan::new(&settings, &["nope".into()], false).unwrap_err();
        assert!(
            err.to_string().contains("\"nope\"") && err.to_string().contains("dht11"),
            "{err}"
        );
    }

    #[test]
    fn routes_in_two_databases_cannot_move_in_one_transaction() {
        let mut s = settings(
            "[sinks.archive]\nkind = \"mysql\"\nurl = \"mysql://u@127.0.0.1:3306/archive\"\n",
        );
        for r in &mut s.routes {
            if r.name == "bins" {
                r.sink = Some("archive".into());
            }
        }
        let err = Plan::new(&s, &[], false).unwrap_err();
        assert!(
            matches!(&err, RetimeError::SeveralDatabases(s) if s.contains("archive (routes bins)")),
            "{err}"
        );
        let plan = Plan::new(&s, &["bins".into()], false).unwrap();
        assert_eq!(
            (plan.sink.as_str(), plan.key.as_str()),
            ("archive", "sinks.archive")
        );
    }
}
