//! The MySQL panel queries of the shipped dashboards (`grafana/dashboards/*.json`)
//! and their variables, as Grafana would send them with every variable on "All".

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::grafana::{self, MacroError, Selection, Variable, Variables};

/// The provisioned MySQL data source the panels read.
pub const DATASOURCE_UID: &str = "co2-mysql";

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// File name of its dashboard.
    pub dashboard: String,
    /// The panel's title.
    pub title: String,
    /// The target's refId.
    pub ref_id: String,
    /// Its SQL before interpolation.
    pub raw_sql: String,
    /// `panel.maxDataPoints`, when set.
    pub max_data_points: Option<u64>,
    /// `panel.interval` (min interval) in ms, when set.
    pub min_interval_ms: Option<u64>,
    /// `panel.timeFrom` in seconds: a relative range of its own that replaces
    /// the dashboard's.
    pub time_from_s: Option<i64>,
    /// The dashboard's variables, each on "All".
    pub variables: Variables,
}

impl PanelQuery {
    /// "Dashboard title / panel title" plus the refId when a panel has several.
    pub fn label(&self) -> String {
        let dash = self.dashboard.trim_end_matches(".json");
        if self.ref_id == "A" {
            format!("{dash} / {}", self.title)
        } else {
            format!("{dash} / {} ({})", self.title, self.ref_id)
        }
    }

    /// `$__interval` in ms for a range of `range_ms`: the panel's points (else
    /// `default_points`), not below its min interval (else the data source's).
    pub fn interval_ms(&self, range_ms: u64, default_points: u64) -> u64 {
        grafana::panel_interval_ms(
            range_ms,
            self.max_data_points.unwrap_or(default_points),
            self.min_interval_ms
                .unwrap_or(grafana::DEFAULT_MIN_INTERVAL_MS),
        )
    }

    /// The SQL Grafana sends for the range `from_s`..`to_s`.
    pub fn sql(&self, from_s: i64, to_s: i64, default_points: u64) -> Result<String, MacroError> {
        let range_ms = u64::try_from(to_s.saturating_sub(from_s)).unwrap_or(0) * 1000;
        let interval = self.interval_ms(range_ms, default_points);
        grafana::interpolate(&self.raw_sql, &self.variables, from_s, to_s, interval)
    }
}

/// Seconds of a relative time such as `7d`, `now-24h`.
pub fn relative_s(text: &str) -> Option<i64> {
    let t = text.trim().trim_start_matches("now-");
    let s = grafana::parse_interval_s(t).ok()?;
    (s >= 1.0).then_some(s as i64)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn variable(v: &Value) -> Variable {
    let options = v
        .get("options")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .filter_map(|o| o.get("value").and_then(text))
                .collect()
        })
        .unwrap_or_default();
    Variable {
        multi: v.get("multi").and_then(Value::as_bool).unwrap_or(false),
        include_all: v
            .get("includeAll")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        all_value: v
            .get("allValue")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        options,
    }
}

/// Every panel, nested ones (in rows) too.
fn walk<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
    for p in panels {
        out.push(p);
        if let Some(inner) = p.get("panels").and_then(Value::as_array) {
            walk(inner, out);
        }
    }
}

fn uid(ds: Option<&Value>) -> Option<&str> {
    ds.and_then(|d| d.get("uid")).and_then(Value::as_str)
}

/// The MySQL queries of one dashboard (`name` is its file name).
pub fn from_dashboard(name: &str, dash: &Value) -> anyhow::Result<Vec<PanelQuery>> {
    let variables: Variables = dash
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v.get("name").and_then(Value::as_str)?;
            Some((name.to_owned(), (variable(v), Selection::All)))
        })
        .collect();
    let mut panels = Vec::new();
    walk(
        dash.get("panels")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice),
        &mut panels,
    );
    let mut out = Vec::new();
    for panel in panels {
        let title = panel
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("(untitled)")
            .to_owned();
        let min_interval_ms = match panel.get("interval").and_then(Value::as_str) {
            Some(iv) if !iv.is_empty() => Some(
                (grafana::parse_interval_s(iv)
                    .with_context(|| format!("{name}: panel {title:?} interval"))?
                    * 1000.0) as u64,
            ),
            _ => None,
        };
        let time_from_s = match panel.get("timeFrom").and_then(Value::as_str) {
            Some(tf) => Some(
                relative_s(tf)
                    .with_context(|| format!("{name}: panel {title:?} timeFrom {tf:?}"))?,
            ),
            None => None,
        };
        let targets = panel.get("targets").and_then(Value::as_array);
        for target in targets.into_iter().flatten() {
            let ds = target.get("datasource").or_else(|| panel.get("datasource"));
            let hidden = target.get("hide").and_then(Value::as_bool) == Some(true);
            let Some(raw_sql) = target.get("rawSql").and_then(Value::as_str) else {
                continue;
            };
            if hidden || uid(ds) != Some(DATASOURCE_UID) {
                continue;
            }
            out.push(PanelQuery {
                dashboard: name.to_owned(),
                title: title.clone(),
                ref_id: target
                    .get("refId")
                    .and_then(Value::as_str)
                    .unwrap_or("A")
                    .to_owned(),
                raw_sql: raw_sql.to_owned(),
                max_data_points: panel.get("maxDataPoints").and_then(Value::as_u64),
                min_interval_ms,
                time_from_s,
                variables: variables.clone(),
            });
        }
    }
    Ok(out)
}

/// The MySQL queries of every `*.json` in `dir`, dashboards in file-name order.
pub fn load(dir: &Path) -> anyhow::Result<Vec<PanelQuery>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let dash: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(from_dashboard(&name, &dash)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dashboards_have_mysql_panels_that_expand() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/dashboards");
        let panels = load(&dir).unwrap();
        assert!(panels.len() >= 10, "{} panels", panels.len());
        assert!(panels.iter().all(|p| p.dashboard == "co2-emissions.json"));
        for p in &panels {
            let sql = p.sql(1_000_000, 1_086_400, 1000).unwrap();
            assert!(!sql.contains("$__") && !sql.contains("$device"), "{sql}");
        }
        let series = panels
            .iter()
            .find(|p| p.raw_sql.contains("AVG(emissions)") && p.raw_sql.contains("$__interval"))
            .unwrap();
        let sql = series.sql(1_000_000, 1_086_400, 1000).unwrap();
        assert!(sql.contains("UNIX_TIMESTAMP(date_time) DIV 60 * 60 AS \"time\""));
        assert!(sql.contains("('*' IN ('*') OR device IN ('*'))"), "{sql}");
    }

    #[test]
    fn panel_settings_are_read() {
        let dash: Value = serde_json::json!({
            "templating": {"list": [{"name": "device", "multi": true, "includeAll": true, "allValue": "'*'"}]},
            "panels": [
                {"type": "row", "panels": [
                    {"title": "inner", "maxDataPoints": 100, "interval": "10s", "timeFrom": "7d",
                     "datasource": {"type": "mysql", "uid": "co2-mysql"},
                     "targets": [{"refId": "A", "rawSql": "SELECT $__interval"},
                                 {"refId": "B", "rawSql": "SELECT 2", "hide": true}]}
                ]},
                {"title": "prom", "datasource": {"uid": "co2-prometheus"}, "targets": [{"expr": "up"}]},
                {"title": "other", "targets": [{"refId": "C", "rawSql": "SELECT 3",
                  "datasource": {"uid": "co2-mysql"}}]}
            ]
        });
        let panels = from_dashboard("d.json", &dash).unwrap();
        assert_eq!(panels.len(), 2);
        let p = &panels[0];
        assert_eq!(
            (p.max_data_points, p.min_interval_ms, p.time_from_s),
            (Some(100), Some(10_000), Some(604_800))
        );
        assert_eq!(p.label(), "d / inner");
        assert_eq!(panels[1].label(), "d / other (C)");
        // 1 h over 100 points = 36 s -> 30 s, above the panel's 10 s
        assert_eq!(p.sql(0, 3600, 1000).unwrap(), "SELECT 30s");
        assert_eq!(relative_s("now-24h"), Some(86_400));
        assert_eq!(relative_s("soon"), None);
    }
}
