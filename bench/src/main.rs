//! `co2-bench`: see `co2-bench --help`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use co2_bench::broker::TestBroker;
use co2_bench::cli::{Cli, Command, Common, Shape};
use co2_bench::load::Load;
use co2_bench::report::{self, RunReport};
use co2_bench::run::{self, Paths, Target, DEVICE_PREFIX};
use co2_bench::{account, db, load};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,co2_bench=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("co2-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("co2-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_of(shape: &Shape) -> Load {
    Load {
        devices: shape.devices,
        connections: shape.connections.unwrap_or(shape.devices),
        readings: shape.readings,
        rate: shape.rate(),
        qos: shape.qos,
        inflight: shape.inflight,
        topic_prefix: shape.topic_prefix.clone(),
        wait: Duration::from_secs(shape.wait_s),
    }
}

fn loopback_only(host: &str) -> anyhow::Result<()> {
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("--mqtt-host {host}: co2-bench only sends load to loopback addresses");
    }
    Ok(())
}

async fn own_broker(common: &Common, devices: usize) -> anyhow::Result<Option<TestBroker>> {
    loopback_only(&common.mqtt_host)?;
    let Some(kind) = common.own_broker else {
        return Ok(None);
    };
    let ids: Vec<String> = (0..devices)
        .map(|d| load::device_id(DEVICE_PREFIX, d))
        .collect();
    Ok(Some(TestBroker::start(kind, &common.repo, &ids).await?))
}

fn target<'a>(common: &Common, owned: Option<&'a TestBroker>) -> Target<'a> {
    owned.map_or_else(
        || Target::external(&common.mqtt_host, common.mqtt_port),
        Target::owned,
    )
}

fn emit(json: bool, runs: &[RunReport]) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(runs)?);
    } else {
        print!("{}", report::table(runs));
    }
    Ok(())
}

/// Exit status 3 when a measured run lost or duplicated readings.
fn verdict(runs: &[RunReport]) -> ExitCode {
    if runs.iter().any(|r| r.lost > 0 || r.duplicates > 0) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Load(a) => {
            let broker = own_broker(&a.common, a.shape.devices).await?;
            let target = target(&a.common, broker.as_ref());
            let load = load_of(&a.shape);
            let report = if a.own_bridge {
                let paths = Paths {
                    db_url: a.common.db_url.clone(),
                    bridge_bin: run::bridge_bin(a.common.bridge_bin.as_ref())?,
                    bridge_env: a.common.bridge_env.clone(),
                    bridge_db_params: a.common.bridge_db_params.clone(),
                };
                run::bridges_run("bridge", &paths, &target, &load, a.bridges).await?
            } else {
                // A bridge someone else runs writes into --db-url.
                let prefix = a
                    .device_prefix
                    .clone()
                    .unwrap_or_else(|| format!("b{:07x}d", rand::random::<u32>() & 0x0fff_ffff));
                let pool = db::pool(&a.common.db_url, 2).await?;
                let spec = load.spec(&target, &prefix);
                let since_id = db::max_id(&pool).await?;
                let outcome = load::run(&spec).await?;
                let n = outcome.sent.len() as u64;
                db::wait_for_rows(
                    &pool,
                    &prefix,
                    since_id,
                    n,
                    Duration::from_secs(15),
                    load.wait,
                )
                .await?;
                let rows = db::rows(&pool, &prefix).await?;
                let acc = account::account(&outcome.sent, &rows);
                let mut r = RunReport::from_accounting(
                    "load",
                    &target.label,
                    "external",
                    &acc,
                    outcome.first_publish.timestamp_millis(),
                );
                r.publish = Some(outcome.figures());
                r
            };
            let runs = [report];
            emit(a.common.json, &runs)?;
            Ok(verdict(&runs))
        }
        Command::Ceilings(a) => {
            let broker = own_broker(&a.common, a.shape.devices).await?;
            let target = target(&a.common, broker.as_ref());
            let load = load_of(&a.shape);
            let paths = Paths {
                db_url: a.common.db_url.clone(),
                bridge_bin: Default::default(),
                bridge_env: Vec::new(),
                bridge_db_params: None,
            };
            let mut runs = vec![
                run::null_run(
                    "broker ceiling: null subscriber",
                    &target,
                    &load,
                    a.subscribers,
                )
                .await?,
            ];
            runs.extend(run::db_runs("db ceiling", &paths, &load, a.batch).await?);
            emit(a.common.json, &runs)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Naive(a) => {
            let broker = own_broker(&a.common, a.shape.devices).await?;
            let target = target(&a.common, broker.as_ref());
            let paths = Paths {
                db_url: a.common.db_url.clone(),
                bridge_bin: Default::default(),
                bridge_env: Vec::new(),
                bridge_db_params: None,
            };
            let runs = [run::naive_run(
                "naive consumer",
                &paths,
                &target,
                &load_of(&a.shape),
                a.sub_qos,
            )
            .await?];
            emit(a.common.json, &runs)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kafka(a) => {
            let bin = run::bridge_bin(a.common.bridge_bin.as_ref())?;
            let kafka = co2_testkit::KafkaBroker::start().await?;
            let load = co2_bench::kafka::KafkaLoad {
                records: a.records,
                partitions: a.partitions,
                devices: a.devices,
            };
            let mut runs = Vec::new();
            for _ in 0..a.repeat {
                runs.push(co2_bench::kafka::null_run(&kafka, &load).await?);
                for &n in &a.bridges {
                    runs.push(
                        co2_bench::kafka::bridges_run(
                            &kafka,
                            &load,
                            n,
                            &bin,
                            &a.common.db_url,
                            &a.common.bridge_env,
                        )
                        .await?,
                    );
                }
                eprint!("{}", co2_bench::kafka::table(&runs));
            }
            if a.common.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", co2_bench::kafka::table(&runs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboards(a) => {
            co2_bench::dashboards::command::run(&a).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(a) => {
            co2_bench::export::run(&a).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(a) => {
            co2_bench::import::run(&a).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::All(a) => {
            if a.common.own_broker.is_some() {
                bail!("`all` starts its own stock and provisioned brokers; drop --own-broker");
            }
            let paths = Paths {
                db_url: a.common.db_url.clone(),
                bridge_bin: run::bridge_bin(a.common.bridge_bin.as_ref())?,
                bridge_env: a.common.bridge_env.clone(),
                bridge_db_params: a.common.bridge_db_params.clone(),
            };
            let json = a.common.json;
            let suite = run::suite(&paths, &a.common.repo, &a, |r| {
                if !json {
                    eprint!("{}", report::table(std::slice::from_ref(r)));
                }
            })
            .await?;
            let text = serde_json::to_string_pretty(&suite)?;
            if let Some(out) = &a.out {
                std::fs::write(out, &text)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            if json {
                println!("{text}");
            } else {
                let e = &suite.environment;
                println!(
                    "{} | {} CPUs ({}) | {} MiB | {} | {} | {} | kernel {}",
                    e.date,
                    e.cpus,
                    e.cpu_model,
                    e.memory_mib,
                    e.mosquitto,
                    e.database,
                    e.bridge,
                    e.kernel
                );
                print!("{}", report::table(&suite.runs));
                println!();
                print!("{}", report::figures(&suite.figures));
            }
            // Losses are findings here (a stock broker drops by design); they are in the report.
            Ok(ExitCode::SUCCESS)
        }
    }
}
