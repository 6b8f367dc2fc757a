//! `co2-publisher`: command line over the library (settings -> run / read-once / check-config).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use co2_publisher::{app, clock, config::Settings, status};
use tokio_util::sync::CancellationToken;

/// Used when --config is not given and the file exists (where the installer puts it).
const DEFAULT_CONFIG: &str = "/etc/co2-publisher/publisher.toml";

#[derive(Parser)]
#[command(
    name = "co2-publisher",
    version,
    about = "Reads a CO2 sensor and publishes each reading over MQTT, queued on disk until acknowledged."
)]
struct Cli {
    /// TOML settings file; every key can also be set as CO2_PUBLISHER__<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "CO2_PUBLISHER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Sample, queue and publish until SIGTERM/SIGINT (the default).
    Run {
        /// Stop after this many readings, once all are delivered (overrides max_readings).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print one reading from the configured sensor and exit.
    ReadOnce,
    /// Print the effective settings (secrets masked) and exit.
    CheckConfig,
    /// Check the path to the broker hop by hop (config, DNS, TCP, TLS, login,
    /// the ACL on the readings topic, its subscribers, the clock), each ok,
    /// unproven, failed or skipped; exit 1 when a hop fails.
    Doctor,
    /// Print what the running publisher reports (queue, broker, drops, clock)
    /// from its status file; exits 1 when it is not running or not responding.
    Status {
        /// Print the status file as it is (JSON).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("co2-publisher: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli.config.or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| DEFAULT_CONFIG.into())
    });
    let source = match &config_path {
        Some(p) => format!("{} + environment", p.display()),
        None => "environment only; no --config file".into(),
    };
    let loaded = Settings::load(config_path.as_deref());
    if let Some(Command::Doctor) = cli.command {
        // The doctor reports a config that does not load as its first hop.
        return doctor(loaded, &source);
    }
    let mut settings = loaded.with_context(|| format!("bad configuration ({source})"))?;
    if let Some(Command::Status { json }) = cli.command {
        return print_status(&settings, json);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command.unwrap_or(Command::Run { count: None }) {
        Command::Run { count } => {
            if count.is_some() {
                settings.max_readings = count;
            }
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                app::run(settings, shutdown).await
            })?;
        }
        Command::ReadOnce => {
            let floor = settings.clock.min_time.unwrap_or_else(clock::build_time);
            if chrono::Utc::now() < floor {
                eprintln!("warning: the clock reads earlier than clock.min_time ({floor}); `run` would wait for it");
            }
            let (sensor, reading) = runtime.block_on(app::read_once(&settings))?;
            println!("{reading}");
            eprintln!("from {sensor}");
        }
        Command::CheckConfig => {
            let kind = app::sensor_kind(&settings)?;
            if settings.device.is_none() {
                eprintln!("warning: device is not set; `run` needs it");
            }
            print!("{}", settings.to_masked_toml());
            println!("# sensor kind in effect: {kind:?}");
            println!("# topic: {}", settings.topic());
            println!("# client id: {}", settings.client_id());
            println!("# events topic: {}", settings.events_topic());
            println!("# status file: {}", settings.status_path().display());
        }
        Command::Status { .. } | Command::Doctor => {}
    }
    Ok(())
}

/// `doctor`: the report on stdout; exit 1 when a hop fails.
fn doctor(
    loaded: Result<Settings, co2_publisher::config::ConfigError>,
    source: &str,
) -> anyhow::Result<()> {
    let report = match loaded {
        Ok(settings) => tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")?
            .block_on(co2_publisher::doctor::diagnose(&settings, source)),
        Err(e) => co2_wire::doctor::Report::config_failed(
            &e.to_string(),
            co2_publisher::doctor::CONFIG_FIX,
        ),
    };
    print!("{}", report.render());
    // Unproven hops are listed, but only a failure is an error.
    anyhow::ensure!(
        report.passed(),
        "co2-publisher doctor: failed: {}",
        report.failed().join(", ")
    );
    Ok(())
}

/// `status`: reads the state file the running service rewrites.
fn print_status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let path = &settings.status_path();
    let state = status::read(path)?;
    let alive = status::process_alive(state.pid);
    let now = chrono::Utc::now();
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", status::render(&state, now, alive));
    }
    match status::liveness(&state, now, alive) {
        status::Liveness::Running => Ok(()),
        status::Liveness::Stale => anyhow::bail!(
            "the publisher (pid {}) has not updated {} for a while: is it hung?",
            state.pid,
            path.display()
        ),
        status::Liveness::Stopped => {
            anyhow::bail!("the publisher is not running (last status above)")
        }
    }
}

/// Cancels `shutdown` on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("Stop requested; finishing outstanding publishes");
    shutdown.cancel();
}
