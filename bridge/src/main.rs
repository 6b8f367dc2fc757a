//! `co2-bridge`: run the bridge, migrate the schema, print the effective
//! config, check the path, list and replay dead letters, export or import.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use co2_bridge::replay::{DeadLetters, Progress, ReplayError, Selection};
use co2_bridge::{Bridge, ConfigError, MigrateError, RunError, Settings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// MQTT -> MySQL bridge for CO2 readings.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file; every key can be overridden by CO2_BRIDGE__<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "CO2_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CO2_BRIDGE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default).
    Run,
    /// Apply pending database migrations, then exit (use an admin account).
    Migrate,
    /// Print the effective configuration with secrets masked, then exit.
    CheckConfig,
    /// Print the Mosquitto ACL that fits the configured routes, then exit.
    Acl,
    /// Check the path hop by hop (config, broker DNS/TCP/TLS/login/ACL,
    /// each database's TCP/login/grants/migrations/clock, each sink, the
    /// devices' clocks), each ok, unproven, failed or skipped; exit 1 when
    /// a hop fails.
    Doctor,
    /// List the dead letters (rejected_messages in MySQL), or replay them
    /// through today's configuration.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Move one device's stored times by a fixed shift (readings stored in
    /// the wrong time zone or by a wrong clock), in one transaction.
    Retime(co2_bridge::retime::RetimeArgs),
    /// One retention pass (partitions added ahead, expired ones dropped per
    /// [retention]), then what each kept table holds; for a timer run as an
    /// admin when the bridge's account may not alter its tables.
    Retention,
    /// Rebuild the per-minute/hour/day rollups from the raw rows, or verify them.
    #[command(subcommand)]
    Rollup(co2_bridge::rollups::RollupCommand),
    /// Write a route's raw rows or a rollup tier, for a device set and a
    /// time range, as CSV or NDJSON; resumable after an interruption.
    Export(co2_bridge::export::cli::ExportArgs),
    /// Store readings from files (CSV, NDJSON, payload lines), standard
    /// input or a legacy MySQL table through the route and sink live
    /// readings take; bad lines become dead letters; rerunning is harmless.
    Import(co2_bridge::import::ImportArgs),
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Print the selected dead letters, a tab-separated line each: id,
    /// received_at (UTC), reason, route, device, what a replay would do
    /// today (replay, refused:<reason>, skip:<why>), detail, payload preview.
    List {
        #[command(flatten)]
        selection: Selection,
    },
    /// Feed the selected dead letters through today's configuration: what
    /// decodes now is stored through its route's sink and its letter deleted,
    /// exactly once.
    #[command(long_about = REPLAY_ABOUT)]
    Replay {
        #[command(flatten)]
        selection: Selection,
        /// Decode and report, but write and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `co2-bridge dead-letters replay --help`.
const REPLAY_ABOUT: &str = "\
Feed the selected dead letters through today's configuration: what decodes now
is stored through its route's sink and its letter deleted, exactly once.

For letters a setting refused: say a Pi sends local time without an offset
and every reading became too_far_in_future. Set its zone (a [[devices]]
entry's time_zone, co2.time_zone, a route's or wire.time_zone), then:

  co2-bridge dead-letters list --reason too_far_in_future     # what would be taken
  co2-bridge dead-letters replay --reason too_far_in_future --dry-run
  co2-bridge dead-letters replay --reason too_far_in_future

Each letter is decoded as a delivery on the topic it was stored with, with
\"now\" = its received_at, so the future check compares a reading with when it
arrived. Rows and the deletion of their letters commit in one transaction
when the route writes to the MySQL database that keeps the letters; other
sinks (InfluxDB) are written first, then the letters deleted, and a run cut
in between is finished by the next (the writes are idempotent). Running it
again changes nothing. A letter refused again stays, with today's reason and
detail. Zones the bridge learned for time_zone = \"auto\" devices are read
from its state directory (run with the bridge's state.dir), so readings held
as time_zone_unknown are stored in them. Safe while the bridge runs: letters
stored after the run started are left for the next.

Not replayed (skipped, counted): letters whose payload was truncated
(wire.dead_letter_payload_bytes kept only its start); HTTP ingest letters
named http/ingest/<route> (the device came from the bearer token, which is
not stored); Kafka letters whose device came from the record key
(device_from_key on a topic that names none; the key is not stored); topics
that fill the 255-character column; crashed_bridge letters unless --reason
crashed_bridge names them. Readings replayed from MQTT v5 lose their
co2-seq number, which a dead letter does not keep.

Exit status: 0 when every selected letter was replayed (or nothing was
selected), 1 when some stay refused or were skipped, or a store failed,
2 for a configuration or argument error.";

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    co2_bridge::install_panic_hook();
    raise_file_limit();
    // TLS to the broker uses rustls with ring (see the workspace Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            // 2 = configuration problem: restarting will not help.
            if is_config_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// True when `e` is the configuration's fault, found at load or at start.
fn is_config_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConfigError>().is_some()
        || matches!(
            e.downcast_ref::<RunError>(),
            Some(RunError::Config(_) | RunError::Kafka(_))
        )
        || matches!(
            e.downcast_ref::<MigrateError>(),
            Some(MigrateError::Config(_))
        )
        || e.downcast_ref::<ReplayError>()
            .is_some_and(ReplayError::is_config)
        || e.downcast_ref::<co2_bridge::export::ExportError>()
            .is_some_and(co2_bridge::export::ExportError::is_request)
        || e.downcast_ref::<co2_bridge::import::ImportError>()
            .is_some_and(co2_bridge::import::ImportError::is_request)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let command = cli.command.unwrap_or(Command::Run);
    let loaded = Settings::load(cli.config.as_deref());
    let settings = match (&command, loaded) {
        // The doctor reports a config that does not load as its first hop.
        (Command::Doctor, loaded) => return doctor(cli.config.as_deref(), loaded).await,
        (_, loaded) => loaded?,
    };
    match command {
        Command::CheckConfig => {
            co2_bridge::check(&settings)?;
            print!("{}", settings.to_masked_toml());
            print!("{}", co2_bridge::learned_note(&settings.state_dir()));
            Ok(())
        }
        Command::Acl => {
            print!(
                "{}",
                co2_bridge::acl::Acl::from_settings(&settings)?.render()
            );
            Ok(())
        }
        Command::Migrate => {
            let applied = co2_bridge::migrate(&settings).await.context(
                "migration failed; is the database reachable (database.url) and the account an admin?",
            )?;
            println!("Applied {applied} migration(s); the schema is up to date.");
            Ok(())
        }
        Command::Doctor => doctor(cli.config.as_deref(), Ok(settings)).await,
        Command::DeadLetters(command) => dead_letters(&settings, command).await,
        Command::Retime(args) => {
            let report = co2_bridge::retime::run(&settings, &args).await?;
            print!("{}", report.render());
            Ok(report.outcome()?)
        }
        Command::Retention => {
            print!("{}", co2_bridge::storage::run(&settings).await?);
            Ok(())
        }
        Command::Rollup(command) => {
            let (report, agreed) = co2_bridge::rollups::run(&settings, &command).await?;
            print!("{report}");
            anyhow::ensure!(agreed, "co2-bridge rollup verify: some buckets differ");
            Ok(())
        }
        Command::Export(args) => {
            co2_bridge::export::cli::run(&settings, &args).await?;
            Ok(())
        }
        Command::Import(args) => {
            let summary = co2_bridge::import::run(&settings, &args)
                .await
                .context("co2-bridge import")?;
            print!("{}", summary.render(started.elapsed()));
            anyhow::ensure!(
                summary.complete(),
                "co2-bridge import: {} line(s) rejected (dead letters: co2-bridge dead-letters list)",
                summary.rejected
            );
            Ok(())
        }
        Command::Run => {
            let bridge = Bridge::build(settings).await?;
            if let Some(addr) = bridge.http_addr() {
                tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "co2-bridge starting; /metrics, /healthz, /readyz");
            }
            let stop = CancellationToken::new();
            tokio::spawn(stop_on_signal(stop.clone()));
            bridge.run_until_stopped(stop).await?;
            Ok(())
        }
    }
}

/// `co2-bridge doctor`: the report on stdout; exit 1 when a hop fails.
async fn doctor(
    config: Option<&std::path::Path>,
    loaded: Result<Settings, ConfigError>,
) -> anyhow::Result<()> {
    let source = config.map_or("defaults and CO2_BRIDGE__* environment".to_owned(), |p| {
        p.display().to_string()
    });
    let report = match loaded {
        Ok(settings) => co2_bridge::doctor::diagnose(&settings, &source).await,
        Err(e) => co2_bridge::doctor::Report::config_failed(
            &e.to_string(),
            co2_bridge::doctor::CONFIG_FIX,
        ),
    };
    print!("{}", report.render());
    // Unproven hops are listed, but only a failure is an error.
    anyhow::ensure!(
        report.passed(),
        "co2-bridge doctor: failed: {}",
        report.failed().join(", ")
    );
    Ok(())
}

/// `co2-bridge dead-letters list|replay`: the letters or the summary on
/// stdout; a replay that leaves selected letters behind exits 1.
async fn dead_letters(settings: &Settings, command: DeadLettersCommand) -> anyhow::Result<()> {
    use std::io::Write;
    let letters = DeadLetters::from_settings(settings)?;
    match command {
        DeadLettersCommand::List { selection } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = letters.list(&selection, &mut out).await?;
            out.flush().context("cannot write to stdout")?;
            eprintln!("{n} dead letter(s) selected");
            Ok(())
        }
        DeadLettersCommand::Replay { selection, dry_run } => {
            let summary = letters
                .replay(&selection, dry_run, &mut Progress::stderr())
                .await?;
            print!("{}", summary.render());
            if summary.complete() {
                return Ok(());
            }
            anyhow::bail!(
                "{} of {} selected dead letter(s) {} (see above)",
                summary.selected - summary.replayed,
                summary.selected,
                if dry_run { "would stay" } else { "stay" }
            )
        }
    }
}

/// SIGTERM or Ctrl-C starts an orderly shutdown; a second one exits at once.
async fn stop_on_signal(stop: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("Signal received; shutting down (send it again to exit immediately)");
    stop.cancel();
    wait_for_signal().await;
    tracing::warn!("Second signal; exiting without flushing (the broker will redeliver)");
    std::process::exit(130);
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The async runtime: one worker thread unless `TOKIO_WORKER_THREADS` asks
/// for more. The bridge's work is small per message and mostly waiting, and
/// on a box it shares with the broker and the database a second worker cost
/// more in wake-ups between the two than it saved: in the 200,000-reading
/// burst (BENCHMARKS.md, "Bridge CPU per reading") one worker used about a
/// tenth less CPU per reading, at the same throughput and latency.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    builder.enable_all().build()
}

/// Raises the soft limit on open files to the hard one: systemd gives
/// services 1024 by default, and HTTP connections, the database pool and the
/// MQTT connections share them (the HTTP listeners cap their connections too).
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(max)) = (limit.current, limit.maximum) else {
        return;
    };
    if current < max {
        limit.current = Some(max);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::debug!(from = current, to = max, "Raised the open-file limit"),
            Err(e) => {
                tracing::warn!(error = %e, limit = current, "Cannot raise the open-file limit")
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rumqttc=warn"));
    // No colour codes in the journal or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
