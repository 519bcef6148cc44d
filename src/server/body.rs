//! Request bodies, read within bounds: at most `max_body_bytes`, the whole body within `body_timeout`, and
//! at most `max_body_readers` bodies of one tenant being read at once. Memory follows the bytes received: a
//! body that arrives in many small frames is copied into one buffer as it comes, so no frame keeps the
//! connection's read buffer (8 KiB) alive per byte.
//!
//! A body read before its caller is verified (the signature covers it: Supabase's hook, the Tencent API,
//! Logto's webhook) never takes a tenant's slots: it is read within [`Unverified`], a budget of its own per
//! door, per source address and in bytes for all doors together, so an anonymous caller can hold none of the
//! capacity that authenticated callers use.

use crate::config::ServerSettings;
use crate::error::GatewayError;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Body;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How bodies of one tenant (or of the unauthenticated routes) may be read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub(crate) max_bytes: usize,
    /// The whole body, first byte to last, must arrive within this time.
    pub timeout: Duration,
}

/// A slot for one body read from `readers` (one tenant's, see `LiveTenant::body_readers`), or `server_busy`
/// when every slot is taken: requests beyond the bound are answered at once, unread.
fn slot(readers: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, GatewayError> {
    readers.clone().try_acquire_owned().map_err(|_| GatewayError::ServerBusy)
}

/// The request's declared length, refused when over `max` (a declared length over the limit is refused
/// unread).
fn declared<B>(req: &Request<B>, max: usize) -> Result<Option<u64>, GatewayError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(GatewayError::PayloadTooLarge);
    }
    Ok(declared)
}

/// Reads the body of an authenticated caller within `limits`, holding one of `readers`' slots (its
/// tenant's) meanwhile.
pub async fn read<B>(req: Request<B>, limits: BodyLimits, readers: &Arc<Semaphore>) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    declared(&req, limits.max_bytes)?;
    let _slot = slot(readers)?;
    within(limits, collect(req.into_body(), limits.max_bytes, |_| Ok(()))).await
}

async fn within<T>(
    limits: BodyLimits,
    reading: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    tokio::time::timeout(limits.timeout, reading).await.unwrap_or(Err(GatewayError::RequestTimeout))
}

/// A door whose body is read before its caller is verified; each has its own reading slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignedDoor {
    Supabase,
    TencentApi,
    LogtoWebhook,
}

impl SignedDoor {
    /// The door as a metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            SignedDoor::Supabase => "supabase",
            SignedDoor::TencentApi => "tencent_api",
            SignedDoor::LogtoWebhook => "logto_webhook",
        }
    }
}

/// The TCP peer of a request, put in its extensions by the accept loop (absent when a test drives
/// `Gateway::handle` without a socket: such requests share one source).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// A source address as the per-address bound counts it: an IPv4 address, or the /64 of an IPv6 one (one
/// host commonly holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
    Unknown,
}

impl Source {
    fn of<B>(req: &Request<B>) -> Source {
        match req.extensions().get::<Peer>().map(|p| p.0) {
            None => Source::Unknown,
            Some(IpAddr::V4(v4)) => Source::V4(v4.into()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// One source address may hold at most this share of the bytes budget: at least this many addresses are
/// needed to fill it (as `max_unverified_readers` / `max_unverified_per_address` addresses fill a door).
const ADDRESS_SHARE: usize = 8;

/// The budget of bodies read before verification: [`ServerSettings::max_unverified_readers`] at once per
/// door, [`ServerSettings::max_unverified_per_address`] at once per source, and
/// [`ServerSettings::max_unverified_bytes`] of their bytes for all doors together (an eighth of it per
/// source). Beyond any of them, the request is answered `503 server_busy` at once, the rest of its body
/// unread. Sized at start.
pub struct Unverified {
    doors: [Arc<Semaphore>; 3],
    per_address: usize,
    bytes_per_address: usize,
    /// Sources with a body in reading: at most the doors' slots, so bounded.
    sources: Arc<Mutex<HashMap<Source, SourceUse>>>,
    bytes: Arc<Semaphore>,
}

/// What one source holds: bodies in reading and their bytes.
#[derive(Debug, Default)]
struct SourceUse {
    bodies: usize,
    bytes: usize,
}

/// What an unverified body holds while it is read and until its signature is checked.
pub(crate) struct UnverifiedHold {
    _door: OwnedSemaphorePermit,
    _source: SourceHold,
}

/// One body's share of its source's entry and of the bytes budget; given back when dropped.
struct SourceHold {
    source: Source,
    sources: Arc<Mutex<HashMap<Source, SourceUse>>>,
    bytes: usize,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for SourceHold {
    fn drop(&mut self) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = sources.get_mut(&self.source) {
            used.bodies -= 1;
            used.bytes -= self.bytes;
            if used.bodies == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

impl Unverified {
    pub(crate) fn new(server: &ServerSettings) -> Unverified {
        Unverified::sized(server.max_unverified_readers, server.max_unverified_per_address, server.max_unverified_bytes)
    }

    fn sized(per_door: usize, per_address: usize, bytes: usize) -> Unverified {
        let door = || Arc::new(Semaphore::new(per_door));
        Unverified {
            doors: [door(), door(), door()],
            per_address,
            bytes_per_address: bytes / ADDRESS_SHARE,
            sources: Arc::default(),
            bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    fn source(&self, source: Source) -> Result<SourceHold, GatewayError> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let used = sources.entry(source).or_default();
        if used.bodies >= self.per_address {
            return Err(GatewayError::ServerBusy);
        }
        used.bodies += 1;
        Ok(SourceHold { source, sources: self.sources.clone(), bytes: 0, permit: None })
    }

    /// `n` more bytes for `hold`'s body, within its source's share and the whole budget; none left is
    /// `server_busy`.
    fn take_bytes(&self, hold: &mut SourceHold, n: usize) -> Result<(), GatewayError> {
        if n == 0 {
            return Ok(());
        }
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let used = sources.get_mut(&hold.source).ok_or(GatewayError::ServerBusy)?;
        if used.bytes + n > self.bytes_per_address {
            return Err(GatewayError::ServerBusy);
        }
        let permits = u32::try_from(n).map_err(|_| GatewayError::PayloadTooLarge)?;
        let more = self.bytes.clone().try_acquire_many_owned(permits).map_err(|_| GatewayError::ServerBusy)?;
        used.bytes += n;
        hold.bytes += n;
        match &mut hold.permit {
            Some(permit) => permit.merge(more),
            None => hold.permit = Some(more),
        }
        Ok(())
    }

    /// Reads the body of a caller not verified yet at `door`, within `limits` and this budget. The hold
    /// is kept until the signature over the body has been checked, then dropped.
    pub(crate) async fn read<B>(
        &self,
        door: SignedDoor,
        req: Request<B>,
        limits: BodyLimits,
    ) -> Result<(Bytes, UnverifiedHold), GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let declared = declared(&req, limits.max_bytes)?;
        let door = slot(&self.doors[door as usize])?;
        let mut source = self.source(Source::of(&req))?;
        // A declared length is reserved whole, before the first byte; a chunked body as its frames come.
        self.take_bytes(&mut source, declared.unwrap_or(0) as usize)?;
        let charge = |len: usize| {
            let more = len.saturating_sub(source.bytes);
            self.take_bytes(&mut source, more)
        };
        let body = within(limits, collect(req.into_body(), limits.max_bytes, charge)).await?;
        Ok((body, UnverifiedHold { _door: door, _source: source }))
    }
}

/// The body's bytes, at most `max`; `charge` is told the length so far before each frame is kept and may
/// refuse it. The common case (the whole body in one frame) is returned as it came; from a second frame
/// on, frames are copied into one growing buffer and dropped at once.
async fn collect<B>(
    body: B,
    max: usize,
    mut charge: impl FnMut(usize) -> Result<(), GatewayError>,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| GatewayError::InvalidRequest("body could not be read".into()))?;
        let Ok(data) = frame.into_data() else { continue }; // trailers carry nothing we read
        if data.is_empty() {
            continue;
        }
        len += data.len();
        if len > max {
            return Err(GatewayError::PayloadTooLarge);
        }
        charge(len)?;
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            Some(earlier) => {
                joined.reserve(earlier.len() + data.len());
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
            None => joined.extend_from_slice(&data),
        }
    }
    Ok(match first {
        Some(only) => only,
        None => Bytes::from(joined),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn trickle(
        chunks: Vec<&'static [u8]>,
    ) -> StreamBody<impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
        let frames = chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from_static(c))));
        StreamBody::new(tokio_stream_iter(frames))
    }

    fn tokio_stream_iter<I: Iterator + Unpin>(iter: I) -> impl futures_core::Stream<Item = I::Item> + Unpin {
        struct Iter<I>(I);
        impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
            type Item = I::Item;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<I::Item>> {
                std::task::Poll::Ready(self.0.next())
            }
        }
        Iter(iter)
    }

    #[tokio::test]
    async fn frames_are_joined_and_bounded() {
        let one = collect(trickle(vec![b"{\"a\":1}"]), 64, |_| Ok(())).await.unwrap();
        assert_eq!(&one[..], b"{\"a\":1}");
        let many = collect(trickle(vec![b"{", b"\"a\"", b"", b":1", b"}"]), 64, |_| Ok(())).await.unwrap();
        assert_eq!(&many[..], b"{\"a\":1}");
        let over = collect(trickle(vec![b"0123", b"4567", b"8"]), 8, |_| Ok(())).await.unwrap_err();
        assert_eq!(over.code(), "payload_too_large");
    }

    fn from(ip: &str) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(Peer(ip.parse().unwrap()));
        req
    }

    #[test]
    fn sources_count_ipv6_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(Source::of(&from("2001:db8:1:2::1")), Source::of(&from("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::of(&from("2001:db8:1:2::1")), Source::of(&from("2001:db8:1:3::1")));
        assert_eq!(Source::of(&from("::ffff:198.51.100.7")), Source::of(&from("198.51.100.7")));
        assert_eq!(Source::of(&Request::new(())), Source::Unknown);
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_gives_it_back() {
        let budget = Unverified::sized(64, 2, 8 * 1024);
        let a = Source::of(&from("203.0.113.1"));
        let (mut one, two) = (budget.source(a).unwrap(), budget.source(a).unwrap());
        assert_eq!(budget.source(a).err().map(|e| e.code()), Some("server_busy"));
        // An address holds at most an eighth of the bytes, whichever of its bodies takes them.
        budget.take_bytes(&mut one, 1000).unwrap();
        assert_eq!(budget.take_bytes(&mut one, 25).err().map(|e| e.code()), Some("server_busy"));
        // Other addresses have their own share, until the whole budget is taken.
        let mut others: Vec<SourceHold> = (2..9).map(|i| budget.source(Source::V4(i)).unwrap()).collect();
        for other in &mut others {
            budget.take_bytes(other, 1024).unwrap();
        }
        let mut last = budget.source(Source::V4(99)).unwrap();
        assert_eq!(budget.take_bytes(&mut last, 25).err().map(|e| e.code()), Some("server_busy"), "all taken");
        drop((one, two, others, last));
        assert!(budget.sources.lock().unwrap().is_empty(), "no entry outlives its bodies");
        assert_eq!(budget.bytes.available_permits(), 8 * 1024);
    }

    #[tokio::test]
    async fn readers_are_bounded() {
        let readers = Arc::new(Semaphore::new(1));
        let held = slot(&readers).unwrap();
        assert_eq!(slot(&readers).unwrap_err().code(), "server_busy");
        drop(held);
        assert!(slot(&readers).is_ok());
    }
}
