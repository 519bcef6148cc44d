//! Request bodies, read within bounds: at most `max_body_bytes`, the whole body within `body_timeout`, and
//! at most `max_body_readers` bodies of one tenant being read at once. Memory follows the bytes received: a
//! body that arrives in many small frames is copied into one buffer as it comes, so no frame keeps the
//! connection's read buffer (8 KiB) alive per byte.

use crate::error::GatewayError;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Body;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How bodies of one tenant (or of the unauthenticated routes) may be read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The whole body, first byte to last, must arrive within this time.
    pub timeout: Duration,
}

/// A slot for one body read from `readers` (one tenant's, see `Tenant::body_readers`), or `server_busy` when
/// every slot is taken: requests beyond the bound are answered at once, unread.
fn slot(readers: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, GatewayError> {
    readers.clone().try_acquire_owned().map_err(|_| GatewayError::ServerBusy)
}

/// Reads the body within `limits`, holding one of `readers`' slots meanwhile. A declared length over the
/// limit is refused unread.
pub async fn read<B>(req: Request<B>, limits: BodyLimits, readers: &Arc<Semaphore>) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(GatewayError::PayloadTooLarge);
    }
    let _slot = slot(readers)?;
    match tokio::time::timeout(limits.timeout, collect(req.into_body(), limits.max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(GatewayError::RequestTimeout),
    }
}

/// The body's bytes, at most `max`. The common case (the whole body in one frame) is returned as it came;
/// from a second frame on, frames are copied into one growing buffer and dropped at once.
async fn collect<B>(body: B, max: usize) -> Result<Bytes, GatewayError>
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
        let one = collect(trickle(vec![b"{\"a\":1}"]), 64).await.unwrap();
        assert_eq!(&one[..], b"{\"a\":1}");
        let many = collect(trickle(vec![b"{", b"\"a\"", b"", b":1", b"}"]), 64).await.unwrap();
        assert_eq!(&many[..], b"{\"a\":1}");
        let over = collect(trickle(vec![b"0123", b"4567", b"8"]), 8).await.unwrap_err();
        assert_eq!(over.code(), "payload_too_large");
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
