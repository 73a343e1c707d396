//! The `cormorant` command line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cormorant::config::Config;
use cormorant::query::{self, Format};

#[derive(Parser)]
#[command(
    name = "cormorant",
    version,
    about = "Debezium change streams from Kafka into Delta Lake tables, queried with SQL"
)]
struct Cli {
    /// Config file (default: ./cormorant.toml if present)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum ViewAction {
    /// Recompute a view from its table's latest version and commit the difference (a
    /// running worker carries on from it).
    Rebuild { name: String },
}

#[derive(Subcommand)]
enum Command {
    /// Run the streaming worker.
    ///
    /// Example: cormorant run --config cormorant.toml --until-caught-up
    Run {
        /// Stop (exit 0) once everything that was in the topics at start is committed
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Windowed views ([[views]] in the config): recompute one from its table.
    ///
    /// Example: cormorant view rebuild orders_per_day
    View {
        #[command(subcommand)]
        action: ViewAction,
    },
    /// Re-read a bounded range of a table's topic (backfill, rebuild) with a progress bar.
    ///
    /// Example: cormorant replay --table customers --from earliest --into customers_rebuilt
    Replay {
        #[arg(long)]
        table: String,
        /// earliest | RFC 3339 time | partition:offset,…
        #[arg(long, default_value = "earliest")]
        from: cormorant::replay::Bound,
        /// latest (the end when the replay starts) | RFC 3339 time | partition:offset,… (exclusive)
        #[arg(long, default_value = "latest")]
        to: cormorant::replay::Bound,
        /// Write into this table instead (built fresh from the range)
        #[arg(long)]
        into: Option<String>,
    },
    /// Per table: version, rows, files, deletion-vector share, last commit, lag per partition.
    ///
    /// Example: cormorant status --format json
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Compact tables now: rewrite files with many deleted rows and bin small files.
    ///
    /// Example: cormorant compact --table customers
    Compact {
        /// Only this table (default: every table in the lake)
        #[arg(long)]
        table: Option<String>,
    },
    /// Delete data and deletion-vector files that no table version inside the retention reads.
    ///
    /// Files newer than the retention are never deleted (a running worker's files are not in
    /// the log yet); versions older than it may no longer be readable afterwards.
    ///
    /// Example: cormorant vacuum --table customers --retain 168h --dry-run
    Vacuum {
        /// Only this table (default: every table in the lake)
        #[arg(long)]
        table: Option<String>,
        /// Keep what versions of this long ago need [default: the table's
        /// delta.deletedFileRetentionDuration, maintenance.deleted_file_retention]
        #[arg(long, value_parser = humantime::parse_duration)]
        retain: Option<std::time::Duration>,
        /// List what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Run SQL over the lake's tables: an interactive shell, or the statements of -c / -f.
    ///
    /// Example: cormorant sql -c "SELECT * FROM customers VERSION AS OF 3 WHERE NOT __deleted ORDER BY id" --format csv
    Sql {
        /// Statement(s) to run; may be repeated
        #[arg(short = 'c', long = "command")]
        commands: Vec<String>,
        /// File of statements to run
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Serve the lake over the PostgreSQL wire protocol (read-only; psql, psycopg, JDBC, BI tools).
    ///
    /// Needs serve.password (or CORMORANT_SERVE__PASSWORD); TLS when serve.tls_cert and
    /// serve.tls_key are set. Example:
    ///   CORMORANT_SERVE__PASSWORD=secret cormorant serve --listen 127.0.0.1:5433
    ///   PGPASSWORD=secret psql "host=127.0.0.1 port=5433 user=cormorant" -c "SELECT count(*) FROM customers"
    Serve {
        /// Address to listen on [default: serve.listen, 127.0.0.1:5433]
        #[arg(long)]
        listen: Option<String>,
    },
    /// Load a captured Debezium stream (events.jsonl + schemas.json) into the broker and registry.
    ///
    /// Example: cormorant load-fixture --dir tests/fixtures/debezium --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081
    #[command(hide = true)]
    LoadFixture {
        #[arg(long, default_value = "tests/fixtures/debezium")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        registry: String,
        /// Prefix for topic and subject names
        #[arg(long, default_value = "")]
        prefix: String,
        /// Load only the first N events
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Serve a Confluent-compatible schema registry (for tests and the quickstart).
    ///
    /// Example: cormorant registry --port 8081 --data registry.json
    Registry {
        #[arg(long, default_value_t = 8081)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// JSON file to persist subjects and schemas in
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORMORANT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            // deltalake_core logs every commit race, at ERROR once retries are off ("exceeded
            // maximum commit attempts max_retries=0"); Cormorant resolves races itself (tables/
            // src/commit.rs) and returns every real commit error with its own message
            "info,deltalake=warn,deltalake_core=warn,deltalake_core::kernel::transaction=off,datafusion=warn,datafusion_postgres=warn,pgwire=warn,buoyant_kernel=off",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colours only on a terminal: a log redirected to a file or a collector stays plain text
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The lake and the tables a maintenance command works on: one, or every table in the lake.
async fn lake_tables(cfg: &Config, table: Option<String>) -> anyhow::Result<(tables::Lake, Vec<String>)> {
    let lake = cfg.lake.open()?;
    let names = match table {
        Some(t) => vec![t],
        None => lake.list_tables().await?,
    };
    Ok((lake, names))
}

#[cfg(not(feature = "heap-profile"))]
/// mimalloc instead of glibc's malloc: the decode and apply stages allocate many short-lived
/// column buffers from several threads; measured on the pipeline bench (1M inserts, release)
/// it raised inserts from ~285k to ~310k events per CPU-second (benches/results/pipeline.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cormorant::memory::tune_allocator();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = real_main(cli).await;
    // a checkpoint that came due with the last commits is written before the process exits
    // (a stop has seconds, not the minute a normal end may wait)
    if STOPPING.load(Ordering::Relaxed) {
        tables::maintain::settle_within(std::time::Duration::from_millis(500)).await;
    } else {
        tables::maintain::settle().await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(tables::error::untrusted_certificate) {
                eprintln!(
                    "hint: a TLS server presented a certificate this worker does not trust; set lake.ca_file \
                     (S3) or registry.ca_file to the PEM file of the CA that signed it"
                );
            }
            // exit before the runtime is dropped: threads still using it (the consumer's poll
            // thread, the Delta kernel's executor) would panic on a runtime shutting down
            std::process::exit(1)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { until_caught_up } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let stop = Arc::new(AtomicBool::new(false));
            tokio::spawn(stop_on_signals(stop.clone()));
            let stats = cormorant::worker::run(&cfg, until_caught_up, stop).await?;
            tracing::info!(?stats, "worker stopped");
        }
        Command::Replay { table, from, to, into } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let s = cormorant::replay::replay(&cfg, &table, &from, &to, into.as_deref(), true).await?;
            println!(
                "replayed {} events into {} in {:.1}s ({:.0} events/s): {} commits, {} dead letters, table version {}",
                s.events,
                s.table,
                s.seconds,
                s.events as f64 / s.seconds.max(1e-9),
                s.commits,
                s.dead_letters,
                s.version.map_or("-".to_string(), |v| v.to_string())
            );
        }
        Command::View {
            action: ViewAction::Rebuild { name },
        } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let cormorant::views::Rebuilt { step, remade } = cormorant::views::rebuild(&cfg, &name).await?;
            if let Some(why) = remade {
                println!(
                    "view {name}: {why}; the table was made anew (a worker running the new config takes it up at its table's next commit; stop any worker still running the old one)"
                );
            }
            println!(
                "view {name}: reflects version {} of its table; {} rows upserted, {} deleted{}",
                step.source_version,
                step.upserts,
                step.deletes,
                step.version.map_or(String::new(), |v| format!(", view version {v}"))
            );
        }
        Command::Status { format } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let batch = cormorant::status::status(&cfg).await?;
            query::print(&[batch], format, &mut std::io::stdout())?;
        }
        Command::Compact { table } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let (lake, names) = lake_tables(&cfg, table).await?;
            for name in names {
                let mut t = lake.open(&name, None).await?;
                let r = tables::compact(&mut t, &cfg.compaction.options).await?;
                match r.version {
                    Some(v) => println!(
                        "{name}: version {v}: {} files -> {} files, {} rows, {} bytes read, {} bytes written",
                        r.files_removed, r.files_added, r.rows_written, r.bytes_read, r.bytes_written
                    ),
                    None if r.conflicted => println!("{name}: a concurrent commit won; nothing changed, run again"),
                    None => println!("{name}: nothing to compact"),
                }
            }
        }
        Command::Vacuum { table, retain, dry_run } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let (lake, names) = lake_tables(&cfg, table).await?;
            for name in names {
                let mut t = lake.open(&name, None).await?;
                let r = tables::vacuum(&mut t, retain, dry_run).await?;
                let verb = if dry_run { "would delete" } else { "deleted" };
                for (path, bytes) in &r.files {
                    println!("{name}: {verb} {path} ({bytes} bytes)");
                }
                println!(
                    "{name}: {verb} {} files ({} deletion vectors), {} bytes",
                    r.files.len(),
                    r.dv_files,
                    r.bytes
                );
            }
        }
        Command::Serve { listen } => {
            let cfg = Config::load(cli.config.as_deref())?;
            cormorant::serve::run(&cfg, listen, shutdown_signal()).await?;
        }
        Command::Sql { commands, file, format } => {
            let cfg = Config::load(cli.config.as_deref())?;
            let mut statements = commands;
            if let Some(f) = file {
                statements.push(std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?);
            }
            let ctx = query::session(&cfg).await?;
            if statements.is_empty() {
                return cormorant::shell::run(&ctx, format).await;
            }
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for sql in statements {
                for batches in query::run_sql(&ctx, &sql).await? {
                    query::print(&batches, format, &mut out)?;
                }
            }
            out.flush()?;
        }
        Command::LoadFixture {
            dir,
            brokers,
            registry,
            prefix,
            limit,
        } => {
            let fx = cormorant::fixture::Fixture::load(&dir)?;
            let ids = fx.register(&registry, &prefix).await?;
            fx.create_topics(&brokers, &prefix, 1).await?;
            let n = limit.unwrap_or(fx.events.len()).min(fx.events.len());
            fx.produce(&brokers, &prefix, &ids, 0..n).await?;
            eprintln!("loaded {n} events into {} topics at {brokers}", fx.topics().len());
        }
        Command::Registry { port, host, data } => {
            let addr = format!("{host}:{port}")
                .parse()
                .with_context(|| format!("bad address {host}:{port}"))?;
            cormorant::registry::serve(addr, data).await?;
        }
    }
    Ok(())
}

/// Set by the first SIGTERM/SIGINT.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The longest a stop may take: past it the process exits whatever is still running (a hung
/// broker can hold librdkafka's close). Nothing half-done is committed either way: Delta
/// commits are atomic and the next start resumes from the tables' offsets.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_millis(4500);

/// First signal: stop gracefully (and exit by [`STOP_DEADLINE`] whatever happens); second
/// signal: exit at once.
async fn stop_on_signals(stop: Arc<AtomicBool>) {
    shutdown_signal().await;
    tracing::info!("signal received: finishing the batch in flight (a second signal exits at once)");
    STOPPING.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    // a plain thread: it must fire even if the runtime's threads are all blocked
    let _ = std::thread::Builder::new().name("stop-deadline".into()).spawn(|| {
        std::thread::sleep(STOP_DEADLINE);
        tracing::warn!(deadline = ?STOP_DEADLINE, "the worker did not stop in time (a service is hung); exiting now — nothing uncommitted is lost, the next start resumes from the tables' offsets");
        std::process::exit(0);
    });
    shutdown_signal().await;
    tracing::warn!("second signal: exiting at once");
    std::process::exit(130);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
