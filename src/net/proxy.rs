//! Egress: how a provider's client (and the webhook relay) reaches an endpoint. Directly, or through an HTTP proxy: a CONNECT tunnel
//! for https endpoints (TLS runs end to end to the provider, through the tunnel; the proxy sees only the host),
//! absolute-form requests for plain http ones. Which proxy (`tencent.proxy`, `HTTPS_PROXY`, `NO_PROXY`...) is
//! decided when the config compiles (`config::Proxy`); this module only dials. A proxy that cannot be
//! reached, refuses the tunnel or does not open it within [`CONNECT_TIMEOUT`] fails the connect, so the send
//! is a connect failure (nothing sent: retried, failed over, quota given back), never a hang.

use crate::config::{Proxy, TrustRoots};
use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

/// The TCP connect to an endpoint, or to the proxy and the CONNECT handshake after it, must finish within
/// this time; past it the attempt is a connect failure.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pooled HTTP/1 client for one egress (rustls, keep-alive).
pub(crate) type HttpsClient = Client<hyper_rustls::HttpsConnector<EgressConnector>, WrittenBody>;

/// A request body that records whether the connection began to write it: until it does, the provider cannot
/// have the request (it acts on nothing without its body), so a failure or a deadline before that point
/// certainly sent nothing (an empty body counts as written once the head is). The typed fact behind every "was anything sent?" (see `client::Exchange`).
pub(crate) struct WrittenBody {
    body: Full<Bytes>,
    written: Arc<AtomicBool>,
}

impl WrittenBody {
    /// `body`, and the flag the connection sets when it starts writing it.
    pub(crate) fn new(body: Bytes) -> (WrittenBody, Arc<AtomicBool>) {
        let written = Arc::new(AtomicBool::new(false));
        (WrittenBody { body: Full::new(body), written: written.clone() }, written)
    }
}

impl Body for WrittenBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.written.store(true, Ordering::Release);
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        if end {
            // An empty body (Aliyun's SendSms sends everything in its query) is never polled: hyper asks this
            // as it writes the request head on a connection, so from here the request may be the provider's.
            // Asked earlier, it errs on the safe side: a send reads as maybe sent, never as sent nowhere.
            self.written.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The host's trust store, read once: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the distribution's
/// bundle (`/etc/ssl/certs/ca-certificates.crt` and the other places OpenSSL looks). Empty when there is
/// none (a bare container without CA certificates): the built-in roots still apply. A certificate that does
/// not parse is skipped, as OpenSSL skips it.
fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        tracing::debug!(certificates = found.certs.len(), errors = found.errors.len(), "system trust store read");
        found.certs
    })
}

/// A client for `proxy` (None: direct) trusting the built-in roots (Mozilla's, compiled in), the host's
/// trust store (`system_roots`) and `roots` (a tenant's `ca_file`).
pub(crate) fn https_client(proxy: Option<&Proxy>, roots: Option<&TrustRoots>) -> HttpsClient {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let mut store = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let (_added, _ignored) = store.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(roots) = roots {
        // Checked when the config compiled: every certificate parses.
        let (_added, _ignored) = store.add_parsable_certificates(roots.certificates.iter().cloned());
    }
    let tls = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = EgressConnector {
        tcp,
        proxy: proxy.map(|p| ProxyTarget {
            uri: p.uri.clone(),
            authorization: p.authorization.as_ref().and_then(|a| {
                let mut value = http::HeaderValue::from_str(a.expose()).ok()?;
                value.set_sensitive(true);
                Some(value)
            }),
        }),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(https)
}

/// One client per distinct egress (proxy and extra roots), kept across reloads so their pools survive: a
/// pooled connection never crosses from one route to another.
#[derive(Default)]
pub(crate) struct Routes {
    clients: Mutex<HashMap<RouteKey, HttpsClient>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    proxy: Option<(String, Option<String>)>,
    roots: Option<[u8; 32]>,
}

impl Routes {
    /// The client for this egress, made on first use.
    pub(crate) fn client(&self, proxy: Option<&Proxy>, roots: Option<&Arc<TrustRoots>>) -> HttpsClient {
        let key = RouteKey {
            proxy: proxy.map(|p| (p.uri.to_string(), p.authorization.as_ref().map(|a| a.expose().to_owned()))),
            roots: roots.map(|r| r.fingerprint),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.entry(key).or_insert_with(|| https_client(proxy, roots.map(|r| &**r))).clone()
    }
}

#[derive(Clone)]
struct ProxyTarget {
    uri: Uri,
    /// `Proxy-Authorization` for the CONNECT request (a plain-http request carries it itself).
    authorization: Option<http::HeaderValue>,
}

/// Dials an endpoint directly or through the proxy; TLS, when the endpoint is https, is layered on top by
/// hyper-rustls, inside the tunnel.
#[derive(Clone)]
pub(crate) struct EgressConnector {
    tcp: HttpConnector,
    proxy: Option<ProxyTarget>,
}

impl Service<Uri> for EgressConnector {
    type Response = EgressStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<EgressStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(proxy) = &self.proxy else {
            let connecting = self.tcp.call(dst);
            return Box::pin(async move { Ok(EgressStream { io: connecting.await?, forwarded: false }) });
        };
        if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy.uri.clone(), self.tcp.clone());
            if let Some(authorization) = &proxy.authorization {
                tunnel = tunnel.with_auth(authorization.clone());
            }
            Box::pin(async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, tunnel.call(dst)).await {
                    Ok(Ok(io)) => Ok(EgressStream { io, forwarded: false }),
                    Ok(Err(e)) => Err(format!("proxy: {e}").into()),
                    Err(_) => Err("proxy: no tunnel within the connect timeout".into()),
                }
            })
        } else {
            // Plain http through a proxy: connect to the proxy and send the request in absolute form.
            let connecting = self.tcp.call(proxy.uri.clone());
            Box::pin(async move {
                let io = connecting.await.map_err(|e| format!("proxy: {e}"))?;
                Ok(EgressStream { io, forwarded: true })
            })
        }
    }
}

/// A connection to an endpoint or to the proxy in front of it.
pub(crate) struct EgressStream {
    io: TokioIo<TcpStream>,
    /// Plain http through a proxy: requests go in absolute form (`POST http://host/`).
    forwarded: bool,
}

impl Connection for EgressStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl Read for EgressStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for EgressStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
