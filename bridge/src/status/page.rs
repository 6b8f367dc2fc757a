//! The status page's HTML: server-rendered, no script, small enough for a
//! phone; charts are inline SVG. Every text from outside (device ids,
//! topics, payloads, errors) is escaped.

use std::fmt::Write;

use super::html::escape as html;
use super::{ClockRow, Component, FiringAlert, Snapshot};
use crate::discovery::SensorRow;

/// The page for `snapshot`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write_page(&mut out, s);
    out
}

fn write_page(o: &mut String, s: &Snapshot) -> std::fmt::Result {
    let state = if s.not_ready.is_empty() {
        r#"<span class="ok">ready</span>"#.to_owned()
    } else {
        format!(
            r#"<span class="bad">not ready</span>: {}"#,
            html(&s.not_ready.join("; "))
        )
    };
    write!(
        o,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>co2-bridge status</title>
<style>
body{{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:70em;padding:.5em 1em;color:#222}}
h1{{font-size:1.3em;margin:.3em 0}} h2{{font-size:1.1em;margin:1.2em 0 .3em;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;width:100%}} td,th{{padding:.2em .5em;text-align:left;border-bottom:1px solid #eee;vertical-align:top}}
td.n,th.n{{text-align:right;font-variant-numeric:tabular-nums}}
.scroll{{overflow-x:auto}} .ok{{color:#176d2c;font-weight:600}} .bad{{color:#b00020;font-weight:600}}
.stale{{background:#fff3cd}} .muted{{color:#777}} code,pre{{font:13px ui-monospace,monospace}}
pre{{background:#f6f6f6;padding:.5em;overflow-x:auto}} svg{{vertical-align:middle}}
</style></head><body>
<h1>co2-bridge {version}</h1>
<p id="summary">{state} · up {uptime} · page generated {generated} · reloads every {refresh} s · <a href="/status.json">JSON</a> · <a href="/metrics">metrics</a></p>
"#,
        refresh = s.refresh_s.max(1),
        version = html(s.version),
        uptime = duration(s.uptime_s as f64),
        generated = html(&s.generated_at),
    )?;

    alerts(o, s)?;

    o.push_str("<h2>Connections and sinks</h2><div class=\"scroll\"><table id=\"components\"><tr><th>What</th><th>State</th><th>Since</th><th>Last error</th></tr>\n");
    for c in s.mqtt.iter().chain(&s.sources).chain(&s.sinks) {
        component_row(o, c)?;
    }
    writeln!(
        o,
        "</table></div><p id=\"pending\">Pending (received, not yet acknowledged): <b>{}</b> of a window of {} messages; {} of {} bytes.</p>",
        s.pending.messages, s.pending.window, s.pending.bytes, s.pending.max_bytes
    )?;

    o.push_str("<h2>Routes</h2><div class=\"scroll\"><table id=\"routes\"><tr><th>Route</th><th>Sink</th><th class=\"n\">Received</th><th class=\"n\">Stored</th><th class=\"n\">Duplicates</th><th>Rejected</th></tr>\n");
    for r in &s.routes {
        let rejected = if r.rejected.is_empty() {
            "0".to_owned()
        } else {
            r.rejected
                .iter()
                .map(|(reason, n)| format!("{}: {n}", html(reason)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            o,
            r#"<tr data-route="{route}"><td>{route}</td><td>{sink}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{rejected}</td></tr>"#,
            r.received,
            r.stored,
            r.duplicates,
            route = html(&r.route),
            sink = html(&r.sink),
        )?;
    }
    o.push_str("</table></div>\n");
    if let Some(sensors) = &s.discovered {
        discovered(o, sensors)?;
    }

    writeln!(
        o,
        "<h2>Devices</h2><p class=\"muted\">Stale: no reading for more than {} s. The line is the last hour, one value a minute, as this bridge stored it since it started.</p>",
        s.stale_after_s
    )?;
    if s.devices.is_empty() {
        o.push_str("<p id=\"no-devices\">No readings stored yet.</p>\n");
    } else {
        o.push_str("<div class=\"scroll\"><table id=\"devices\"><tr><th>Device</th><th class=\"n\">Latest</th><th>Age</th><th>Last hour</th><th>Missing since start</th></tr>\n");
        for d in &s.devices {
            let missing = d
                .missing
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(cause, n)| format!("{}: {n}", html(cause)))
                .collect::<Vec<_>>();
            writeln!(
                o,
                r#"<tr id="device-{id}" class="{class}"><td>{id}</td><td class="n">{latest}</td><td>{age}{mark}</td><td>{spark}</td><td>{missing}</td></tr>"#,
                id = html(&d.device),
                class = if d.stale { "stale" } else { "fresh" },
                latest = number(d.latest),
                age = duration(d.age_s),
                mark = if d.stale {
                    r#" <span class="bad stale-mark">STALE</span>"#
                } else {
                    ""
                },
                spark = sparkline(&d.history),
                missing = if missing.is_empty() {
                    "0".to_owned()
                } else {
                    missing.join(", ")
                },
            )?;
        }
        o.push_str("</table></div>\n");
    }

    clocks(o, &s.clocks)?;

    o.push_str("<h2>Completeness (last hour, from the table)</h2>\n");
    if !s.completeness.available {
        o.push_str("<p class=\"muted\">Not tracked: the CO2 route does not write to a MySQL sink, or completeness.enabled is false.</p>\n");
    } else if let Some(e) = &s.completeness.error {
        writeln!(o, "<p class=\"bad\">Cannot read it: {}</p>", html(e))?;
    } else {
        o.push_str("<div class=\"scroll\"><table id=\"completeness\"><tr><th>Device</th><th class=\"n\">Expected (numbered)</th><th class=\"n\">Stored (numbered)</th><th class=\"n\">Dropped at source</th><th class=\"n\">Lost in transit</th><th class=\"n\">Not yet arrived</th><th class=\"n\">Unnumbered</th><th class=\"n\">Complete</th></tr>\n");
        for c in &s.completeness.items {
            let k = &c.counts;
            writeln!(
                o,
                r#"<tr data-device="{id}"><td>{id}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
                c.expected,
                k.stored,
                k.announced,
                k.lost,
                k.pending,
                k.unnumbered,
                c.percent.map_or("–".to_owned(), |p| format!("{p:.1} %")),
                id = html(&k.device),
            )?;
        }
        o.push_str("</table></div>\n");
    }

    o.push_str("<h2>Newest dead letters</h2>\n");
    if let Some(e) = &s.dead_letters.error {
        writeln!(o, "<p class=\"bad\">Cannot read them: {}</p>", html(e))?;
    } else if s.dead_letters.items.is_empty() {
        o.push_str("<p id=\"no-dead-letters\">None.</p>\n");
    } else {
        o.push_str("<div class=\"scroll\"><table id=\"dead-letters\"><tr><th>Received</th><th>Reason</th><th>Topic</th><th>Payload (escaped, first bytes)</th><th class=\"n\">Bytes</th></tr>\n");
        for l in &s.dead_letters.items {
            let detail = l
                .detail
                .as_deref()
                .map(|d| format!(r#"<br><span class="muted">{}</span>"#, html(d)))
                .unwrap_or_default();
            writeln!(
                o,
                r#"<tr><td>{}</td><td>{}{detail}</td><td><code>{}</code></td><td><code>{}</code></td><td class="n">{}</td></tr>"#,
                html(&l.received_at),
                html(&l.reason),
                html(&l.topic),
                html(&l.preview),
                l.payload_bytes,
            )?;
        }
        o.push_str("</table></div>\n");
    }

    write!(
        o,
        "<h2>Effective configuration (secrets masked)</h2><pre id=\"config\">{}</pre>\n</body></html>\n",
        html(&s.config)
    )
}

/// "Device clocks": only devices whose readings carried a time of their own.
/// The sensors Home Assistant discovery announced.
fn discovered(o: &mut String, sensors: &[SensorRow]) -> std::fmt::Result {
    writeln!(
        o,
        "<h2>Discovered sensors</h2><p class=\"muted\">{} announced (Home Assistant discovery); stored in readings under their device and field.</p>",
        sensors.len()
    )?;
    o.push_str("<div class=\"scroll\"><table id=\"discovered\"><tr><th>Device</th><th>Field</th><th>Unit</th><th>Device class</th><th>State topic</th><th>Note</th></tr>\n");
    for d in sensors {
        let note = match (&d.refused_template, d.taken_by_route) {
            (Some(t), _) => format!("template refused: {}", html(t)),
            (None, true) => "a configured route takes this topic".to_owned(),
            (None, false) => String::new(),
        };
        writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{note}</td></tr>",
            html(&d.device),
            html(&d.field),
            html(d.unit.as_deref().unwrap_or("")),
            html(d.device_class.as_deref().unwrap_or("")),
            html(&d.state_topic),
        )?;
    }
    o.push_str("</table></div>\n");
    Ok(())
}

fn clocks(o: &mut String, rows: &[ClockRow]) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    o.push_str("<h2>Device clocks</h2><p class=\"muted\">How far the times live readings carry are from their arrival. Hours mean a device that sends local time read in another zone.</p>\n");
    o.push_str("<div class=\"scroll\"><table id=\"clocks\"><tr><th>Device</th><th>Time zone</th><th class=\"n\">Offset</th><th>What it means</th></tr>\n");
    for r in rows {
        writeln!(
            o,
            r#"<tr id="clock-{id}"><td>{id}</td><td>{zone}</td><td class="n">{offset}</td><td{class}>{hint}</td></tr>"#,
            id = html(&r.device),
            zone = html(&r.zone),
            offset = r.offset_s.map_or("–".to_owned(), |s| {
                html(&co2_wire::ClockOffset::from_millis((s * 1000.0) as i64).to_string())
            }),
            class = if r.hint.is_some() {
                r#" class="bad""#
            } else {
                ""
            },
            hint = html(r.hint.as_deref().unwrap_or("")),
        )?;
    }
    o.push_str("</table></div>\n");
    Ok(())
}

/// What fires in Alertmanager, first on the page: the one place that
/// answers "is anything wrong".
fn alerts(o: &mut String, s: &Snapshot) -> std::fmt::Result {
    if !s.alerts.available {
        o.push_str("<p id=\"no-alertmanager\" class=\"muted\">Alerts are not shown here: set status.alertmanager_url.</p>\n");
        return Ok(());
    }
    o.push_str("<h2>Alerts firing</h2>\n");
    if let Some(e) = &s.alerts.error {
        return writeln!(
            o,
            "<p id=\"alerts-error\" class=\"bad\">Cannot read them: {}</p>",
            html(e)
        );
    }
    if s.alerts.items.is_empty() {
        o.push_str("<p id=\"no-alerts\" class=\"ok\">None.</p>\n");
        return Ok(());
    }
    o.push_str("<div class=\"scroll\"><table id=\"alerts\"><tr><th>Severity</th><th>Alert</th><th>Device</th><th>What happened</th><th>Since</th></tr>\n");
    for a in &s.alerts.items {
        alert_row(o, a)?;
    }
    o.push_str("</table></div>\n");
    if s.alerts_firing > s.alerts.items.len() {
        writeln!(
            o,
            "<p class=\"muted\">And {} more: see Alertmanager.</p>",
            s.alerts_firing - s.alerts.items.len()
        )?;
    }
    Ok(())
}

fn alert_row(o: &mut String, a: &FiringAlert) -> std::fmt::Result {
    let class = if a.severity == "critical" { "bad" } else { "" };
    writeln!(
        o,
        r#"<tr><td class="{class}">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
        html(&a.severity),
        html(&a.name),
        html(a.device.as_deref().unwrap_or("")),
        html(&a.summary),
        html(&a.since),
    )
}

fn component_row(o: &mut String, c: &Component) -> std::fmt::Result {
    let state = match (c.up, c.subscribed) {
        (None, _) => r#"<span class="muted">unknown</span>"#.to_owned(),
        (Some(false), _) => r#"<span class="bad">down</span>"#.to_owned(),
        (Some(true), Some(false)) => {
            r#"<span class="bad">connected, not subscribed</span>"#.to_owned()
        }
        (Some(true), _) => r#"<span class="ok">up</span>"#.to_owned(),
    };
    let error = c
        .last_error
        .as_ref()
        .map(|(at, e)| format!("{} <span class=\"muted\">({})</span>", html(e), html(at)))
        .unwrap_or_else(|| "–".to_owned());
    writeln!(
        o,
        "<tr><td>{} <span class=\"muted\">{}</span></td><td>{state}</td><td>{}</td><td>{error}</td></tr>",
        html(&c.name),
        html(&c.kind),
        html(c.since.as_deref().unwrap_or("–")),
    )
}

/// An inline SVG line of `points` (unix time, value), or a dash without two of them.
pub fn sparkline(points: &[(i64, f64)]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let finite: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let (Some(first), Some(last)) = (finite.first(), finite.last()) else {
        return "–".to_owned();
    };
    if finite.len() < 2 {
        return format!("<span class=\"muted\">{}</span>", number(first.1));
    }
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let span_t = (last.0 - first.0).max(1) as f64;
    let span_v = if hi > lo { hi - lo } else { 1.0 };
    let coords: Vec<String> = finite
        .iter()
        .map(|(t, v)| {
            let x = (*t - first.0) as f64 / span_t * W;
            let y = H - 2.0 - (v - lo) / span_v * (H - 4.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        r##"<svg class="spark" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="last hour: {lo} to {hi}"><polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{}"/></svg>"##,
        coords.join(" "),
        lo = number(lo),
        hi = number(hi),
    )
}

fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".to_owned()
    }
}

/// `s` seconds as a short age: `42 s`, `5 min`, `3 h 4 min`, `2 d 1 h`.
pub fn duration(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_spans_its_box_and_degrades_without_points() {
        assert_eq!(sparkline(&[]), "–");
        assert!(sparkline(&[(0, 400.0)]).contains("400.00"));
        let svg = sparkline(&[(0, 400.0), (60, 500.0), (120, 450.0)]);
        assert!(
            svg.contains(r#"points="0.0,22.0 60.0,2.0 120.0,12.0""#),
            "{svg}"
        );
        let flat = sparkline(&[(0, 5.0), (60, 5.0)]);
        assert!(flat.contains("<polyline"), "{flat}");
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(300.0), "5 min");
        assert_eq!(duration(3600.0 * 3.0 + 240.0), "3 h 4 min");
        assert_eq!(duration(86_400.0 * 2.0 + 3600.0), "2 d 1 h");
        assert_eq!(duration(f64::NAN), "0 s");
    }
}
