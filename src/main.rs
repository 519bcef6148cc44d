//! The `smsgate` binary: flags only. `serve` runs the gateway, `check` compiles the config and binds
//! nothing (`--print` shows it with secrets redacted), `explain` shows each stage's decision for one request
//! without sending or consuming quota, `schema` prints the JSON Schema of gateway.yaml.

use clap::{Parser, Subcommand, ValueEnum};
use smsgate::clock::SystemClock;
use smsgate::config::{Config, ProcessEnv};
use smsgate::server::Door;
use smsgate::{Gateway, Runtime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: a request allocates and frees dozens of small buffers across threads, where glibc's malloc
/// showed up as a tenth of the gateway's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "smsgate", version = smsgate::VERSION, about = "A declarative SMS gateway in front of Tencent Cloud SMS")]
struct Cli {
    /// The gateway config.
    #[arg(short = 'c', long, global = true, env = "SMSGATE_CONFIG", default_value = "gateway.yaml")]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Print the JSON Schema of gateway.yaml (for editors: see the modeline at the top of gateway.yaml).
    Schema,
    /// Compile the config (env references, templates, limits, certificates), bind nothing, report every error.
    Check {
        /// Then print the config as read (`${VAR}` expanded) with every secret shown as **REDACTED**.
        #[arg(long)]
        print: bool,
    },
    /// Run the pipeline for one request without sending or consuming quota, and show each decision.
    Explain {
        /// The tenant, by its name in the config.
        #[arg(long)]
        tenant: String,
        /// The number, as the tenant's callers write it (`+8613800138000`, or national with `default_country`).
        #[arg(long)]
        phone: String,
        /// The usage type (`SignIn`, `Register`, ...), as Logto or the native API send it.
        #[arg(long)]
        usage: String,
        /// The verification code (shown only as `***`).
        #[arg(long, default_value = "123456")]
        code: String,
        /// Read the number as Logto's HTTP SMS connector sends it (country code and digits, no `+`).
        #[arg(long)]
        logto: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Logs go to stderr through a writer thread: request threads never wait on a slow log pipe, and lines are
/// written in batches (a buffered writer flushed whenever the queue runs dry). Lines beyond a full queue
/// are dropped rather than stalling sends. The guard flushes what is queued when `main` returns. A `RUST_LOG`
/// that does not parse is an error (exit 2), not silently replaced by the default.
fn init_logs(format: LogFormat) -> Result<tracing_appender::non_blocking::WorkerGuard, ExitCode> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            tracing_subscriber::EnvFilter::builder().parse(&directives).map_err(|e| {
                eprintln!("RUST_LOG: {e} (expected directives such as `info` or `smsgate=debug,info`)");
                ExitCode::from(2)
            })?
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("RUST_LOG: not valid Unicode");
            return Err(ExitCode::from(2));
        }
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Pretty => builder.fmt_fields(smsgate::logfields::TextFields).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(guard)
}

/// The config at `path` and its runtime (scripts compiled), or every error printed (exit 2).
fn load(path: &Path) -> Result<Runtime, ExitCode> {
    Runtime::load(path, &ProcessEnv).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        ExitCode::from(2)
    })
}

/// Writes a command's output to stdout. A reader that went away (`smsgate explain … | head`) ends it
/// quietly, as ripgrep does (a `println!` panicked on the closed pipe); another write error is reported.
fn emit(text: std::fmt::Arguments<'_>) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { print } => match load(&cli.config) {
            Ok(runtime) if print => match Config::redacted_yaml(&cli.config, &ProcessEnv) {
                Ok(text) => {
                    eprintln!("{}: ok ({} tenant(s))", cli.config.display(), runtime.tenants().len());
                    emit(format_args!("# {} (secrets redacted)\n{text}\n", cli.config.display()))
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(2)
                }
            },
            Ok(runtime) => emit(format_args!("{}: ok ({} tenant(s))\n", cli.config.display(), runtime.tenants().len())),
            Err(code) => code,
        },
        Command::Schema => emit(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&smsgate::config::json_schema()).unwrap_or_default()
        )),
        Command::Explain { tenant, phone, usage, code, logto, json } => {
            let gateway_runtime = match load(&cli.config) {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            let input = smsgate::explain::Input { tenant, phone, usage, code, logto };
            // A small runtime: explain may read the live counts from Redis.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            match runtime.block_on(smsgate::explain::explain(gateway_runtime, SystemClock::shared(), &input)) {
                Ok(report) if json => {
                    emit(format_args!("{}\n", serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()))
                }
                Ok(report) => emit(format_args!("{report}")),
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve => {
            let _flush_logs_on_exit = match init_logs(cli.log_format) {
                Ok(guard) => guard,
                Err(code) => return code,
            };
            let gateway_runtime = match load(&cli.config) {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            // One worker: a single-threaded runtime, with no work stealing or cross-thread wake-ups.
            let mut builder = match gateway_runtime.config().server.workers {
                1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            };
            let runtime = builder.enable_all().build().expect("tokio runtime");
            match runtime.block_on(serve(cli.config, gateway_runtime)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "gateway stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(path: PathBuf, runtime: Runtime) -> std::io::Result<()> {
    let server = &runtime.config().server;
    let listener = smsgate::server::bind(server.listen)?;
    let tencent = server.tencent_listen.map(smsgate::server::bind).transpose()?;
    let admin = server.admin_listen.map(smsgate::server::bind).transpose()?;
    let (main_tls, tencent_tls, admin_tls) =
        (server.tls.is_some(), server.tencent_tls.is_some(), server.admin_tls.is_some());
    let gateway = Gateway::from_runtime(runtime, SystemClock::shared());
    // Signal handlers are in place before the gateway says it listens: a SIGHUP or SIGTERM sent as soon as
    // it does must reload or stop it, not meet the default action (a SIGHUP would kill it).
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup())?;
    let terms = signal(SignalKind::terminate())?;
    let interrupts = signal(SignalKind::interrupt())?;
    let limiter = gateway.services().limiter.mode().as_str();
    tracing::info!(addr = %listener.local_addr()?, tls = main_tls, config = %path.display(), limiter, "smsgate listening");
    let mut doors = vec![(Door::Main, listener)];
    if let Some(tencent) = tencent {
        tracing::info!(addr = %tencent.local_addr()?, tls = tencent_tls, "Tencent-compatible API listening");
        doors.push((Door::Tencent, tencent));
    }
    if let Some(admin) = admin {
        tracing::info!(addr = %admin.local_addr()?, tls = admin_tls, "admin listening (metrics, admin API, probes)");
        doors.push((Door::Admin, admin));
    }
    tokio::spawn(reload_on_sighup(gateway.clone(), path, hangups));
    gateway.serve_doors(doors, shutdown_signal(gateway.clone(), terms, interrupts)).await
}

/// SIGHUP: compile the config off to the side; swap it in only when it compiles, else keep the old one.
/// Compiling runs on a blocking thread, never on the async workers, one reload at a time: hangups that
/// arrive during a reload leave one pending permit, so they coalesce into one more reload, which reads the
/// file as it is then (the last one wins).
async fn reload_on_sighup(gateway: Gateway, path: PathBuf, mut hangups: tokio::signal::unix::Signal) {
    let pending = std::sync::Arc::new(tokio::sync::Notify::new());
    let waiting = pending.clone();
    tokio::spawn(async move {
        loop {
            waiting.notified().await;
            let (gateway, path) = (gateway.clone(), path.clone());
            let reload =
                tokio::task::spawn_blocking(move || smsgate::server::reload_from(&gateway, &path, &ProcessEnv));
            if let Err(e) = reload.await {
                tracing::error!(error = %e, "config reload failed; keeping the config in force");
            }
        }
    });
    while hangups.recv().await.is_some() {
        pending.notify_one();
    }
}

/// Resolves when the listeners are to close. SIGTERM (how Kubernetes and systemd stop a process) first
/// drains: `/readyz` answers 503 for `server.drain_delay` while requests are still served, so load balancers
/// take the replica out before its port closes; a second signal ends the drain early. SIGINT (Ctrl-C) closes
/// at once. Open requests then have `shutdown_grace` to finish.
async fn shutdown_signal(
    gateway: Gateway,
    mut terms: tokio::signal::unix::Signal,
    mut interrupts: tokio::signal::unix::Signal,
) {
    let drain = tokio::select! {
        _ = interrupts.recv() => { tracing::info!("SIGINT received"); false }
        _ = terms.recv() => { tracing::info!("SIGTERM received"); true }
    };
    let delay = gateway.config().server.drain_delay;
    if !drain || delay.is_zero() {
        return;
    }
    gateway.begin_drain();
    tracing::info!(drain_delay_s = delay.as_secs_f64(), "draining: /readyz answers 503, requests are still served");
    tokio::select! {
        () = tokio::time::sleep(delay) => tracing::info!("drain delay over"),
        _ = terms.recv() => tracing::info!("second SIGTERM: drain ended early"),
        _ = interrupts.recv() => tracing::info!("SIGINT: drain ended early"),
    }
}
