//! Shared helpers: start a bridge (in process or as the real binary), publish
//! numbered readings, and read back what the table holds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use co2_bridge::{Bridge, Settings};
// The readings, the bridge's environment and waiting for rows are the test
// kit's (the cluster drills use them too); re-exported for the tests here.
pub use co2_testkit::{
    assert_exactly_once, bridge_env, expected, payload, publish_range, reading, stored_in,
    wait_for_rows, BridgeProcess,
};
use co2_testkit::{free_port, http_get, unique, wait_until, Broker, Database, Publisher};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A bridge running inside the test process.
pub struct InProcess {
    pub http: SocketAddr,
    /// The device listener (ingest, images), when the environment turns it on.
    pub device: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), co2_bridge::RunError>>,
}

impl InProcess {
    pub async fn start(env: Vec<(String, String)>) -> Self {
        Self::start_with(env, None).await
    }

    /// As `start`, with a TOML config file under the environment.
    pub async fn start_with(env: Vec<(String, String)>, config: Option<&std::path::Path>) -> Self {
        let mut env = env;
        let devices = env
            .iter()
            .any(|(k, _)| k == "CO2_BRIDGE__HTTP__DEVICE_LISTEN");
        env.retain(|(k, _)| {
            k != "CO2_BRIDGE__HTTP__LISTEN" && k != "CO2_BRIDGE__HTTP__DEVICE_LISTEN"
        });
        env.push(("CO2_BRIDGE__HTTP__LISTEN".into(), "127.0.0.1:0".into()));
        if devices {
            env.push((
                "CO2_BRIDGE__HTTP__DEVICE_LISTEN".into(),
                "127.0.0.1:0".into(),
            ));
        }
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info,co2_bridge=debug")
            .try_init();
        let settings = Settings::load_from(config, env).unwrap();
        let bridge = Bridge::build(settings).await.unwrap();
        let http = bridge.http_addr().unwrap();
        let device = bridge.device_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(bridge.run_until_stopped(stop.clone()));
        let me = Self {
            http,
            device,
            stop,
            task,
        };
        me.wait_ready().await;
        me
    }

    pub async fn wait_ready(&self) {
        let http = self.http;
        let ready = wait_until(Duration::from_secs(30), || async move {
            matches!(http_get(http, "/readyz").await, Ok((200, _)))
        })
        .await;
        assert!(ready, "bridge not ready within 30 s");
    }

    pub async fn scrape(&self) -> String {
        http_get(self.http, "/metrics").await.unwrap().1
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("bridge did not stop within 30 s");
        result.unwrap().unwrap();
    }
}

/// The real `co2-bridge` binary of this package with `env`, logging to a
/// fresh file named after `log_name`: for kill -9 and exit-code tests.
pub fn spawn_binary(env: &[(String, String)], log_name: &str) -> BridgeProcess {
    BridgeProcess::spawn_logged(Path::new(env!("CARGO_BIN_EXE_co2-bridge")), env, log_name).unwrap()
}

/// A free port for a bridge's HTTP listener.
pub fn http_port() -> u16 {
    free_port().unwrap()
}

/// The environment that turns on a bridge's device listener, on a free port.
pub fn device_listener() -> (String, String) {
    (
        "CO2_BRIDGE__HTTP__DEVICE_LISTEN".into(),
        format!("127.0.0.1:{}", http_port()),
    )
}

/// Minute `i` after 2024-05-01 10:00:00 UTC, as `%Y-%m-%d %H:%M:%S`.
pub fn minute(i: usize) -> String {
    let t = chrono::DateTime::from_timestamp(1_714_557_600 + i as i64 * 60, 0).unwrap();
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Publishes readings `0..per_device` of `devices` devices from a task, with
/// `pause` between rounds (flat out without), and waits for every PUBACK.
pub fn spawn_stream(
    port: u16,
    prefix: &str,
    devices: usize,
    per_device: usize,
    pause: Option<Duration>,
) -> JoinHandle<()> {
    let prefix = prefix.to_owned();
    let publisher = Publisher::connect(port, &unique("pub-stream"));
    tokio::spawn(async move {
        for i in 0..per_device {
            publish_range(&publisher, &prefix, devices, i..i + 1).await;
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
        let total = (devices * per_device) as u64;
        assert!(publisher.wait_acked(total, Duration::from_secs(120)).await);
        publisher.disconnect().await;
    })
}

/// Waits for a restarted bridge to bring the table to `devices` × `per_device`
/// rows, then asserts each reading is there exactly once.
pub async fn assert_restart_completes(
    db: &Database,
    restarted: &BridgeProcess,
    devices: usize,
    per_device: usize,
) {
    let total = (devices * per_device) as i64;
    let rows = wait_for_rows(db, total, Duration::from_secs(120)).await;
    assert_eq!(rows, total, "{}", restarted.log_text());
    assert_exactly_once(db, devices, per_device).await;
}

/// A real, decodable RGB PNG of one colour (stored deflate, no compression).
pub fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    // Each scanline: filter byte 0 (none), then the pixels.
    let mut line = vec![0u8];
    for _ in 0..width {
        line.extend(rgb);
    }
    let raw: Vec<u8> = line.repeat(height as usize);
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Writes a bridge config: the shipped routes example, with HTTP ingest on the
/// camera route for `tokens` (`(device, token)` pairs).
pub fn routes_config(tokens: &[(&str, &str)]) -> PathBuf {
    routes_config_with(tokens, |example| example.to_owned())
}

/// As [`routes_config`], with the example's text changed by `edit` first
/// (say, a commented-out route uncommented).
pub fn routes_config_with(tokens: &[(&str, &str)], edit: impl Fn(&str) -> String) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("co2-routes"));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens_file = dir.join("camera.tokens");
    let lines: String = tokens.iter().map(|(d, t)| format!("{d} {t}\n")).collect();
    std::fs::write(&tokens_file, lines).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.example.toml"))
            .unwrap();
    let config = example.replace(
        "# [routes.http]\n# tokens_file = \"/run/credentials/co2-bridge.service/camera-tokens\"",
        &format!(
            "[routes.http]\ntokens_file = {:?}",
            tokens_file.display().to_string()
        ),
    );
    assert_ne!(
        config, example,
        "the example's [routes.http] lines changed; update this helper"
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, edit(&config)).unwrap();
    path
}

/// A test-owned broker and database, and the environment of a bridge that
/// runs the shipped routes (the shipped topics carry no test prefix, so the
/// broker must be the test's own).
pub struct RouteRig {
    pub db: Database,
    pub broker: Broker,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A [`RouteRig`] for test `name`, with the camera token `token` and the
/// example edited by `edit`.
pub async fn route_rig(name: &str, token: (&str, &str), edit: impl Fn(&str) -> String) -> RouteRig {
    let db = Database::create(name).await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let config = routes_config_with(&[token], edit);
    let mut env = bridge_env(&db.url(), broker.port(), &unique(name), http_port());
    env.push(("CO2_BRIDGE_CONFIG".into(), config.display().to_string()));
    env.push(device_listener());
    RouteRig {
        db,
        broker,
        config,
        env,
    }
}

/// A kill -9 in the middle of a stream on one route.
pub struct Drill {
    pub rig: RouteRig,
    /// The table the route writes.
    pub table: &'static str,
    /// Topic and payload of message `i`.
    pub message: fn(usize) -> (String, Vec<u8>),
    pub messages: usize,
    /// Rows the stream must end as (messages × fields for long layouts).
    pub rows: i64,
    /// Kill when the table holds this many rows.
    pub kill_at: i64,
    /// SQL counting the distinct readings stored; must reach `rows`.
    pub distinct: &'static str,
    /// The payloads carry their time, so a redelivery is a no-op: the table
    /// must hold exactly `rows` rows. Without (bare values), only nothing
    /// may be missing; doubles are counted.
    pub exact: bool,
}

/// Runs a drill; returns the rig (for more checks) and how many rows the
/// redeliveries doubled (always 0 for an exact drill).
pub async fn sigkill_drill(name: &str, drill: Drill) -> (RouteRig, i64) {
    let Drill {
        mut rig,
        table,
        message,
        messages,
        rows,
        kill_at,
        distinct,
        exact,
    } = drill;
    // Small batches, so the table grows in steps a kill can land between.
    rig.env
        .push(("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "100".into()));
    let mut bridge = spawn_binary(&rig.env, name);
    bridge.wait_ready().await;
    let port = rig.broker.port();
    let stream = tokio::spawn(async move {
        let publisher = Publisher::connect(port, &unique("drill"));
        for i in 0..messages {
            let (topic, payload) = message(i);
            publisher.publish(&topic, payload).await.unwrap();
        }
        assert!(
            publisher
                .wait_acked(messages as u64, Duration::from_secs(120))
                .await
        );
        publisher.disconnect().await;
    });
    assert!(
        wait_until(Duration::from_secs(60), || async {
            rig.db.count(table).await.unwrap_or(0) >= kill_at
        })
        .await,
        "{}",
        bridge.log_text()
    );
    bridge.process.kill().await.unwrap();
    let at_kill = rig.db.count(table).await.unwrap();
    assert!(at_kill < rows, "the stream ended before the kill");
    let restarted = spawn_binary(&rig.env, name);
    restarted.wait_ready().await;
    stream.await.unwrap();
    let stored = || async {
        sqlx::query_scalar::<_, i64>(distinct)
            .fetch_one(rig.db.pool())
            .await
            .unwrap_or(0)
    };
    let reached = wait_until(Duration::from_secs(120), || async {
        stored().await >= rows
    })
    .await;
    assert!(
        reached,
        "only {} of {rows} readings:\n{}",
        stored().await,
        restarted.log_text()
    );
    // Give redeliveries a moment to (not) add rows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored().await, rows, "readings besides the stream's");
    let count = rig.db.count(table).await.unwrap();
    eprintln!("{name}: killed at {at_kill} of {rows} rows; {count} rows after the restart");
    if exact {
        assert_eq!(count, rows, "a reading is stored more than once");
    }
    assert_eq!(rig.db.count("rejected_messages").await.unwrap(), 0);
    (rig, count - rows)
}

/// An MQTT v5 publisher that numbers what it sends.
pub struct V5 {
    client: AsyncClient,
    epoch: String,
    _task: tokio::task::JoinHandle<()>,
}

impl V5 {
    /// Connects to 127.0.0.1:`port`; numbers go out in `epoch`.
    pub fn connect(port: u16, epoch: &str) -> Self {
        let mut o = MqttOptions::new(unique("v5pub"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 1000);
        let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        Self {
            client,
            epoch: epoch.to_owned(),
            _task: task,
        }
    }

    /// Publishes QoS 1, numbered `seq` when given.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, seq: Option<u64>) {
        let props = PublishProperties {
            user_properties: seq
                .map(|n| vec![("co2-seq".to_owned(), format!("{}:{n}", self.epoch))])
                .unwrap_or_default(),
            ..Default::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), props)
            .await
            .unwrap();
    }
}
