//! The figures the status page shows, read from the same Prometheus registry
//! `/metrics` renders, so the two cannot disagree.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};

/// One gathering of every metric family.
pub struct Samples(Vec<MetricFamily>);

/// One series: its labels and its value.
pub type Series = (BTreeMap<String, String>, f64);

impl Samples {
    /// Wraps what a registry gathered.
    pub fn new(families: Vec<MetricFamily>) -> Self {
        Self(families)
    }

    /// Every series of counter or gauge `name`.
    pub fn series(&self, name: &str) -> Vec<Series> {
        let Some(family) = self.0.iter().find(|f| f.name() == name) else {
            return Vec::new();
        };
        let kind = family.get_field_type();
        family
            .get_metric()
            .iter()
            .filter_map(|m| {
                let value = match kind {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => return None,
                };
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    .collect();
                Some((labels, value))
            })
            .collect()
    }

    /// The sum of the series of `name` whose labels include every pair of `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.series(name)
            .iter()
            .filter(|(labels, _)| {
                with.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The value of `name` by the value of its label `label`, for the series that also match `with`.
    pub fn by(&self, name: &str, label: &str, with: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (labels, value) in self.series(name) {
            let matches = with
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
            if let (true, Some(key)) = (matches, labels.get(label)) {
                *out.entry(key.clone()).or_insert(0.0) += value;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Metrics;

    #[test]
    fn sums_and_groups_follow_the_labels() {
        let m = Metrics::new(10, &[("co2", "mysql"), ("bins", "mysql")], &["mysql"]).unwrap();
        m.rows_written
            .with_label_values(&["co2", "mysql"])
            .inc_by(5);
        m.rows_written
            .with_label_values(&["bins", "mysql"])
            .inc_by(2);
        m.pending_messages.set(3);
        let s = m.samples();
        assert_eq!(s.sum("co2_bridge_rows_written_total", &[]), 7.0);
        assert_eq!(
            s.sum("co2_bridge_rows_written_total", &[("route", "co2")]),
            5.0
        );
        assert_eq!(s.sum("co2_bridge_pending_messages", &[]), 3.0);
        let by_route = s.by("co2_bridge_rows_written_total", "route", &[]);
        assert_eq!(by_route.get("bins"), Some(&2.0));
        assert!(s.series("no_such_metric").is_empty());
    }
}
