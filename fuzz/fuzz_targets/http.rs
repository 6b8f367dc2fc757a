//! Raw bytes to the bridge's HTTP listeners (hyper's parser, axum's
//! extractors, ingest, `/images`, `/metrics`, the probes), as one connection
//! that sends them and half-closes. The first byte picks the listener
//! (even: the device one, odd: the operator one). Besides "no panic": every
//! exchange ends (a stall is raised by `Exchange`), and what comes back is
//! HTTP, never a 500.
#![no_main]

use co2_bridge::http_exchange::Exchange;
use co2_bridge::Settings;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The device token of `dht-1` and `cam-1`, and the viewer token, as the seeds use them.
const DEVICE_TOKEN: &str = "device-token-0123456789";
const VIEWER_TOKEN: &str = "viewer-token-0123456789";

fn exchange() -> Exchange {
    let dir = std::env::temp_dir().join(format!("co2-fuzz-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let devices = dir.join("devices");
    let viewers = dir.join("viewers");
    std::fs::write(&devices, format!("dht-1 {DEVICE_TOKEN}\n")).expect("the device tokens");
    std::fs::write(&viewers, format!("me {VIEWER_TOKEN}\n")).expect("the viewer tokens");
    // Port 9 on loopback has no listener: an authorised /images request
    // finds the database unavailable at once (connect_timeout_s = 0).
    let config = format!(
        r#"
[database]
url = "mysql://fuzz@127.0.0.1:9/fuzz"
connect_timeout_s = 0

[http]
listen = "127.0.0.1:0"
device_listen = "127.0.0.1:0"
viewer_tokens_file = "{viewers}"

[[routes]]
name = "climate"
topics = ["sensors/{{device}}/dht11"]
decoder = "json"
[routes.http]
tokens_file = "{devices}"

[[routes]]
name = "camera"
topics = ["camera/{{device}}/snapshot"]
decoder = "binary"
max_payload_bytes = 65536
[routes.binary]
data_field = "photo"
[routes.http]
tokens_file = "{devices}"
"#,
        viewers = viewers.display(),
        devices = devices.display(),
    );
    let settings: Settings = toml::from_str(&config).expect("the fuzz config parses");
    Exchange::new(settings).expect("the fuzz bridge builds")
}

fuzz_target!(|data: &[u8]| {
    static EXCHANGE: OnceLock<Exchange> = OnceLock::new();
    let exchange = EXCHANGE.get_or_init(exchange);
    let Some((&which, request)) = data.split_first() else {
        return;
    };
    let answer = if which % 2 == 0 {
        exchange.devices(request)
    } else {
        exchange.operator(request)
    };
    if answer.is_empty() {
        return; // closed without an answer, e.g. nothing like a request head arrived
    }
    assert!(answer.starts_with(b"HTTP/1."), "not an HTTP answer: {:?}", String::from_utf8_lossy(&answer));
    let status = answer.get(9..12).unwrap_or_default();
    assert_ne!(status, b"500", "{}", String::from_utf8_lossy(&answer));
});
