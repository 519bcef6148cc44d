//! The HTTP front: the gateway and its hyper accept loop on each listener, the route table (which front door
//! in `doors/` serves a path), the probes and `/metrics`, the request-duration metric of every request,
//! graceful shutdown, and the runtime swap used by reload. The runtime in force (the config and the running
//! pieces built from it, see `runtime.rs`) is one `Arc` read at the start of each request, so a request
//! finishes on the config and the hooks it started with. Beside the doors: bounded body reads (`body.rs`),
//! TLS before HTTP (`listener.rs`), the answers every route writes (`respond.rs`), and the cap on denial log
//! lines (`denials.rs`).

pub mod body;
mod denials;
pub mod doors;
mod gateway;
mod listener;
mod respond;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::pipeline::Services;
use crate::policy::{Limiter, LimiterMode};
use crate::providers::Providers;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use bytes::Bytes;
use doors::{admin, logto, native, signals, supabase};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

pub use gateway::Gateway;
use gateway::Shared;
pub use respond::request_id;

const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections the kernel may queue before `accept`, as nginx does (it uses 511); the kernel caps it at
/// `net.core.somaxconn`. Linux's default of 128 made serial connects under a burst wait for SYN retries.
const LISTEN_BACKLOG: u32 = 1024;
/// The most a connection's read buffer grows to (hyper's default is about 400 KiB): a request head must fit
/// (Tencent's and Supabase's are under 4 KiB), and a body is read through it in pieces of at most this, so
/// a fast sender cannot make every connection hold 400 KiB of bytes no budget has admitted yet.
const READ_BUFFER: usize = 64 << 10;

/// The listener for `addr`, with a production backlog. The error names the address (`address already in
/// use` alone does not say which).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// What a listener serves: the gateway's routes, the Tencent-compatible API (`server.tencent_listen`), or
/// the probes, metrics and admin API (`server.admin_listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Main,
    Tencent,
    Admin,
}

impl Door {
    /// This door's `tls` block (`tls`, `tencent_tls` or `admin_tls`).
    fn tls(self, server: &crate::config::ServerSettings) -> Option<&crate::config::ListenerTls> {
        match self {
            Door::Main => server.tls.as_ref(),
            Door::Tencent => server.tencent_tls.as_ref(),
            Door::Admin => server.admin_tls.as_ref(),
        }
    }
}

impl Gateway {
    /// A gateway serving `config`, whose runtime is built here.
    ///
    /// # Panics
    ///
    /// When a tenant's script does not compile: for a config known good (tests, benches). A config read
    /// from a file goes through [`Runtime::load`] (which reports every error) and [`Gateway::from_runtime`].
    pub fn new(config: Config, clock: SharedClock) -> Gateway {
        Gateway::from_runtime(built(config), clock)
    }

    /// A gateway serving `runtime`.
    pub fn from_runtime(runtime: Runtime, clock: SharedClock) -> Gateway {
        crate::phone::Phone::warm_up();
        let metrics = Metrics::default();
        let config = runtime.config();
        // `compile` has parsed the same URLs and CA already, so this cannot fail on a compiled config.
        let limiter = Limiter::from_backend(&config.limits_backend, clock.clone())
            .expect("limits_backend was validated by compile");
        let providers = Providers::new(clock.clone(), metrics.tencent.clone());
        let services = Services::observed(limiter, providers, clock, metrics.feedback.clone());
        services.feedback.configure(config);
        let unverified = body::Unverified::new(&config.server);
        let gateway = Gateway {
            shared: Arc::new(Shared {
                runtime: ArcSwap::from_pointee(runtime),
                services,
                metrics,
                draining: AtomicBool::new(false),
                denial_log: denials::DenialLog::default(),
                unverified,
            }),
        };
        gateway.shared.metrics.config_loaded(Some(gateway.shared.services.clock.unix_seconds()));
        gateway.spawn_sweeper();
        gateway.spawn_feedback();
        gateway
    }

    /// Starts the ReportConversion and webhook workers and, with the redis backend, the task that pulls
    /// protection blocks from Redis every second (how a block reaches every replica). Ends with the gateway.
    fn spawn_feedback(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let _entered = runtime.enter();
        self.shared.services.feedback.start();
        if self.shared.services.limiter.mode() == LimiterMode::Memory {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(crate::feedback::REFRESH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(shared) = shared.upgrade() else { return };
                let config = shared.runtime.load().config().clone();
                shared.services.feedback.refresh(&config, &shared.services.limiter).await;
            }
        });
    }

    /// Drops expired in-process limiter and de-duplication state every few seconds, so memory returns to its
    /// baseline after a burst of numbers even when no new traffic arrives to trigger the stores' own sweeps.
    /// Holds the gateway weakly: it ends when the gateway is dropped.
    fn spawn_sweeper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let shared = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(shared) = shared.upgrade() else { return };
                shared.services.limiter.sweep().await;
                shared.services.feedback.sweep(shared.runtime.load().config());
                shared.services.dedupe.sweep().await;
            }
        });
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.runtime.load().config().clone()
    }

    /// The runtime in force: the config and its tenants' running pieces (hooks, body-reading slots).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.runtime.load_full()
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.shared.services
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Puts a newly compiled config in force, its runtime built here, and returns the one it replaces;
    /// requests already running keep the old one. Limiter state lives outside the config, so rules whose name
    /// and definition did not change keep their counts.
    ///
    /// # Panics
    ///
    /// When a tenant's script does not compile, as [`Gateway::new`]; [`reload_from`] reports such errors and
    /// keeps the config in force.
    pub fn reload(&self, mut config: Config) -> Arc<Config> {
        let restart_only = self.keep_restart_settings(&mut config);
        self.put_in_force(built(config), &restart_only).config().clone()
    }

    /// Sets the settings of `config` that take effect only on restart (listener addresses, whether a listener
    /// speaks TLS) back to those in force, and says what else changes only on restart; the warnings are
    /// logged by [`Gateway::put_in_force`], once the new config is known to build.
    fn keep_restart_settings(&self, config: &mut Config) -> Vec<RestartOnly> {
        let old = self.config();
        let mut restart_only = Vec::new();
        let (server, before) = (&mut config.server, &old.server);
        if (server.listen, server.tencent_listen, server.admin_listen)
            != (before.listen, before.tencent_listen, before.admin_listen)
        {
            restart_only.push(RestartOnly::Listener);
            (server.listen, server.tencent_listen, server.admin_listen) =
                (before.listen, before.tencent_listen, before.admin_listen);
        }
        // Whether a listener speaks TLS is fixed at start (its callers' URLs say https or not); a reload
        // re-reads the certificates of those that do.
        for (key, new, old) in [
            ("server.tls", &mut server.tls, &before.tls),
            ("server.tencent_tls", &mut server.tencent_tls, &before.tencent_tls),
            ("server.admin_tls", &mut server.admin_tls, &before.admin_tls),
        ] {
            if new.is_some() != old.is_some() {
                restart_only.push(RestartOnly::Tls(key));
                new.clone_from(old);
            }
        }
        if config.limits_backend != old.limits_backend {
            restart_only.push(RestartOnly::LimitsBackend);
        }
        let (new, old) = (&config.server, &old.server);
        if new.workers != old.workers {
            restart_only.push(RestartOnly::Workers);
        }
        let unverified = |s: &crate::config::ServerSettings| {
            (s.max_unverified_readers, s.max_unverified_per_address, s.max_unverified_bytes)
        };
        if unverified(new) != unverified(old) {
            restart_only.push(RestartOnly::Unverified);
        }
        restart_only
    }

    /// Puts `runtime` in force (its config passed through [`Gateway::keep_restart_settings`]) and returns
    /// the one it replaces.
    fn put_in_force(&self, runtime: Runtime, restart_only: &[RestartOnly]) -> Arc<Runtime> {
        for change in restart_only {
            change.warn();
        }
        let config = runtime.config();
        self.shared.services.limiter.retain_rules(config.tenants.iter().map(|t| &**t));
        self.shared.services.feedback.configure(config);
        self.shared.runtime.swap(Arc::new(runtime))
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, answers `/readyz` with 503, and
    /// waits up to `shutdown_grace` for open requests to finish.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        self.serve_doors(vec![(Door::Main, listener)], shutdown).await
    }

    /// [`Gateway::serve`] on several listeners, each serving its door; one shutdown and one grace for all.
    /// A door speaks TLS when the config in force has a `tls` block for it; each connection takes the
    /// certificates in force when it is accepted.
    pub async fn serve_doors(
        &self,
        listeners: Vec<(Door, TcpListener)>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let accept = || {
            std::future::poll_fn(|cx| {
                for (door, listener) in &listeners {
                    if let std::task::Poll::Ready(accepted) = listener.poll_accept(cx) {
                        return std::task::Poll::Ready((*door, accepted));
                    }
                }
                std::task::Poll::Pending
            })
        };
        loop {
            let (door, stream, peer) = tokio::select! {
                (door, accepted) = accept() => match accepted {
                    Ok((stream, peer)) => (door, stream, peer),
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let config = self.config();
            let header_timeout = config.server.header_timeout;
            let tls = door.tls(&config.server).map(|tls| tls.server_config.clone());
            drop(config);
            let (gateway, watcher, peer) = (self.clone(), graceful.watcher(), body::Peer(peer.ip()));
            tokio::spawn(async move {
                match tls {
                    None => gateway.serve_connection(door, peer, TokioIo::new(stream), header_timeout, watcher).await,
                    Some(tls) => match listener::accept_tls(stream, tls, header_timeout).await {
                        Ok(stream) => {
                            gateway.serve_connection(door, peer, TokioIo::new(stream), header_timeout, watcher).await
                        }
                        Err(refused) => tracing::debug!(reason = %refused, "connection refused before HTTP"),
                    },
                }
            });
        }
        drop(listeners);
        self.shared.draining.store(true, Ordering::SeqCst);
        let grace = self.config().server.shutdown_grace;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: no new connections, finishing open requests"
        );
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all requests finished"),
            () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace over with requests still open"),
        }
        Ok(())
    }

    /// HTTP/1.1 on one connection, watched by the graceful shutdown. While the gateway drains, every answer
    /// carries `Connection: close`, so keep-alive callers move to another replica.
    /// `peer`: the TCP peer's address, for the per-address budget of unverified bodies.
    async fn serve_connection<I>(
        self,
        door: Door,
        peer: body::Peer,
        io: I,
        header_timeout: std::time::Duration,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            let gateway = self.clone();
            async move {
                let mut response = gateway.answer(door, req).await;
                if gateway.is_draining() {
                    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(READ_BUFFER)
            .serve_connection(io, service);
        let _ = watcher.watch(connection).await;
    }

    /// `/readyz` answers 503 from now on while requests are still served: the first step of a drain (SIGTERM),
    /// before the listeners close.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// Answers one request of the admin listener (`server.admin_listen`): the probes, `/metrics` and the
    /// admin API; anything else is 404.
    pub(crate) async fn handle_admin<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = request_id(req.headers());
        let path = req.uri().path();
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return self.operational(req.method(), path, &id).await;
        }
        match admin::route_of(path) {
            Some(route) => admin::serve(self, route, req, &id).await,
            None => respond::error(&GatewayError::NotFound, &id, None),
        }
    }

    /// Answers one request that came in through `door`, and times it for
    /// `smsgate_request_duration_seconds`. What the listeners call; public for benches and tests.
    pub async fn answer<B>(&self, door: Door, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let route = route_label(door, req.uri().path());
        let response = match door {
            Door::Main => self.handle(req).await,
            Door::Tencent => self.handle_tencent(req).await,
            Door::Admin => self.handle_admin(req).await,
        };
        self.shared.metrics.observe_request(route, response.status().as_u16(), started.elapsed());
        response
    }

    /// Answers one request. Public so tests can drive routes without a socket.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let id = request_id(req.headers());
        let path = req.uri().path();
        // The route table of the main listener: a front door's path, and the door that serves it.
        match path {
            native::PATH => self.native(req, &id, started).await,
            logto::PATH => self.logto(req, &id, started).await,
            p if p.starts_with(supabase::PATH) => self.supabase(req, &id, started).await,
            "/healthz" | "/readyz" => self.operational(req.method(), path, &id).await,
            // With an admin listener, metrics and the admin API are served there only.
            "/metrics" if self.shared.runtime.load().config().server.admin_listen.is_none() => {
                self.operational(req.method(), path, &id).await
            }
            _ => {
                if let Some(route) = signals::route_of(path) {
                    return signals::serve(self, route, req, &id).await;
                }
                if let Some(route) = admin::route_of(path) {
                    if self.shared.runtime.load().config().server.admin_listen.is_none() {
                        return admin::serve(self, route, req, &id).await;
                    }
                }
                respond::error(&GatewayError::NotFound, &id, None)
            }
        }
    }

    /// `/healthz`, `/readyz` and `/metrics`, by GET or HEAD.
    async fn operational(&self, method: &Method, path: &str, id: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return respond::error(&GatewayError::MethodNotAllowed { allow: "GET, HEAD" }, id, None);
        }
        let response = self.probe_or_metrics(path, id).await;
        tracing::debug!(request_id = %id, route = path, status = response.status().as_u16(), "request");
        response
    }

    async fn probe_or_metrics(&self, path: &str, id: &str) -> Response<Full<Bytes>> {
        let limiter = &self.shared.services.limiter;
        match path {
            "/healthz" => respond::json(http::StatusCode::OK, id, r#"{"status":"ok"}"#),
            "/readyz" => {
                let mode = limiter.check_ready().await;
                let (status, word) = if self.shared.draining.load(Ordering::SeqCst) {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "draining")
                } else if mode == LimiterMode::Unavailable {
                    // on_error: deny and Redis down: every send would be refused, so take this replica out.
                    (http::StatusCode::SERVICE_UNAVAILABLE, "limiter_unavailable")
                } else {
                    (http::StatusCode::OK, "ready")
                };
                let body = serde_json::json!({"status": word, "limiter": mode.as_str()}).to_string();
                respond::json(status, id, body)
            }
            _ => {
                self.shared.metrics.set_limiter_mode(limiter.mode());
                let (runtime, services) = (self.shared.runtime.load(), &self.shared.services);
                let config = runtime.config();
                let now = services.clock.unix_seconds();
                self.shared.metrics.set_spend_caps(config.tenants.iter().flat_map(|tenant| {
                    let uses = tenant.spend_caps.as_ref().map(|caps| services.spend.usage(&tenant.name, caps, now));
                    uses.into_iter().flatten().map(|u| (tenant.name.to_string(), u))
                }));
                respond::text(
                    http::StatusCode::OK,
                    id,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.shared.metrics.render(),
                )
            }
        }
    }
}

/// The route a request is served as, for metrics: a closed set of names, whatever the path.
pub(crate) fn route_label(door: Door, path: &str) -> &'static str {
    match (door, path) {
        (Door::Tencent, _) => return "tencent_api",
        (Door::Admin, "/healthz" | "/readyz" | "/metrics") => {}
        (Door::Admin, p) => return if admin::route_of(p).is_some() { "admin" } else { "other" },
        (Door::Main, _) => {}
    }
    match path {
        native::PATH => "native",
        logto::PATH => "logto",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        p if p.starts_with(supabase::PATH) => "supabase",
        p => match signals::route_of(p) {
            Some(route) => route.name(),
            None if admin::route_of(p).is_some() => "admin",
            None => "other",
        },
    }
}

/// Reload: compiles the config at `path` off to the side and builds its runtime, and puts them in force only
/// when both succeed; otherwise logs every error and keeps serving the old ones. Returns whether the new config
/// is in force. Compiling reads files and builds Lua states: call it on a blocking thread, never on an async
/// worker.
pub fn reload_from(gateway: &Gateway, path: &std::path::Path, env: &dyn crate::config::Env) -> bool {
    tracing::info!(config = %path.display(), "config reload started");
    let result = Config::load(path, env).and_then(|mut config| {
        let restart_only = gateway.keep_restart_settings(&mut config);
        Runtime::build(config).map(|runtime| (runtime, restart_only))
    });
    let word = if result.is_ok() { "ok" } else { "error" };
    gateway.metrics().reloads.get_or_create(&crate::metrics::ResultLabels { result: word.into() }).inc();
    gateway.metrics().config_loaded(result.is_ok().then(|| gateway.services().clock.unix_seconds()));
    match result {
        Ok((runtime, restart_only)) => {
            let tenants = runtime.tenants().len();
            let previous = gateway.put_in_force(runtime, &restart_only);
            // Logged once the new config is in force: a request that follows this line gets it.
            tracing::info!(config = %path.display(), tenants, "config reloaded");
            free_when_unused(previous);
            true
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "config reload failed; keeping the config in force");
            }
            false
        }
    }
}

/// The runtime of a config known good.
fn built(config: Config) -> Runtime {
    Runtime::build(config).unwrap_or_else(|errors| panic!("the config's runtime does not build:\n{errors}"))
}

/// A setting whose change takes effect on restart only: the new value is not used, and the reload says so.
#[derive(Debug, Clone, Copy)]
enum RestartOnly {
    Listener,
    /// TLS turned on or off; the key of the listener's `tls` block.
    Tls(&'static str),
    LimitsBackend,
    Workers,
    Unverified,
}

impl RestartOnly {
    fn warn(self) {
        match self {
            RestartOnly::Listener => tracing::warn!("a listener's address changed: takes effect on restart"),
            RestartOnly::Tls(key) => tracing::warn!(key, "TLS turned on or off: takes effect on restart"),
            RestartOnly::LimitsBackend => {
                tracing::warn!("limits_backend changed: the new backend takes effect on restart")
            }
            RestartOnly::Workers => tracing::warn!("server.workers changed: takes effect on restart"),
            RestartOnly::Unverified => tracing::warn!("server.max_unverified_* changed: takes effect on restart"),
        }
    }
}

/// Frees a replaced runtime on the reloading thread once the requests still using it are done (waiting at
/// most 30 s), so that dropping thousands of tenants' Lua states does not land on an async worker.
fn free_when_unused(runtime: Arc<Runtime>) {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Arc::strong_count(&runtime) > 1 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
