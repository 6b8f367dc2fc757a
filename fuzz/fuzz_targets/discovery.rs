//! Home Assistant discovery: any announcement (abbreviations, `~`,
//! templates) and then any state message on the topics it may have
//! announced, through the bridge's routes; and the template parser alone on
//! any text and payload. Every record must keep the invariants of
//! `co2_fuzz::check`; nothing may panic or be evaluated beyond the parsed
//! template.
#![no_main]

use co2_bridge::discovery::template::Template;
use co2_fuzz::{deliver, routes, split_delivery};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[discovery]
homeassistant = true
max_sensors = 50
"#;

/// State topics an announcement made from fuzz input is likely to name.
const STATE_TOPICS: [&[u8]; 4] = [b"s", b"zigbee2mqtt/x", b"tele/t/SENSOR", b"~SENSOR"];

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // An announcement on a topic of its choosing, then its bytes as state.
        0 => {
            let (topic, payload) = split_delivery(rest);
            let config = [b"homeassistant/sensor/".as_slice(), topic, b"/config"].concat();
            deliver(routes, &config, payload);
            for state in STATE_TOPICS {
                deliver(routes, state, payload);
            }
        }
        // A well-formed announcement around a fuzzed template, then fuzzed state.
        1 => {
            let (template, state) = split_delivery(rest);
            let template = String::from_utf8_lossy(template);
            let announcement = serde_json_string(&template);
            deliver(
                routes,
                b"homeassistant/sensor/n/t/config",
                announcement.as_bytes(),
            );
            deliver(routes, b"s", state);
        }
        // The template parser and evaluator alone.
        _ => {
            let (template, payload) = split_delivery(rest);
            if let Ok(t) = Template::parse(&String::from_utf8_lossy(template)) {
                let raw = String::from_utf8_lossy(payload);
                let json = serde_json::from_str(&raw).ok();
                let _ = t.apply(json.as_ref(), &raw);
            }
        }
    }
});

/// `{"stat_t":"s","dev":{"ids":["d"]},"val_tpl":<template>}` with the template escaped.
fn serde_json_string(template: &str) -> String {
    let mut escaped = String::with_capacity(template.len() + 2);
    for c in template.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if (c as u32) < 0x20 => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    format!(r#"{{"stat_t":"s","dev":{{"ids":["d"]}},"val_tpl":"{escaped}"}}"#)
}
