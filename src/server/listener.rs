//! One accepted connection before HTTP: on a TLS listener, the handshake (within `header_timeout`, with the
//! certificates of the config in force, so a reload rotates them for new connections while open ones keep
//! theirs), and a clean refusal of plain HTTP sent to a TLS port: a `400` in clear text naming the mistake,
//! then the connection is closed, as nginx does, instead of a TLS alert the caller's HTTP client cannot read.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

const PLAIN_HTTP_BODY: &str =
    "{\"error\":{\"code\":\"tls_required\",\"message\":\"This port speaks TLS: use https:// to reach it.\"}}";

/// The clear-text answer to plain HTTP on a TLS port.
fn plain_http_refused() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    )
}

/// Why a connection ended before HTTP, for the debug log.
#[derive(Debug)]
pub(super) enum Refused {
    /// The first bytes were not a TLS handshake: answered with a plain-text `400`.
    PlainHttp,
    /// The handshake did not finish within the head's time-out.
    Timeout,
    /// The peer closed, or the handshake failed (a bad record, no client certificate under mutual TLS...).
    Handshake(std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::PlainHttp => f.write_str("plain HTTP sent to a TLS port"),
            Refused::Timeout => f.write_str("TLS handshake not finished in time"),
            Refused::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// The TLS stream of `stream`, or why there is none. `deadline` bounds the whole handshake.
pub(super) async fn accept_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    deadline: Duration,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Refused> {
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] != TLS_HANDSHAKE => {
                let mut stream = stream;
                let _ = stream.write_all(plain_http_refused().as_bytes()).await;
                let _ = stream.shutdown().await;
                return Err(Refused::PlainHttp);
            }
            Ok(_) => {}
            Err(e) => return Err(Refused::Handshake(e)),
        }
        tokio_rustls::TlsAcceptor::from(config).accept(stream).await.map_err(Refused::Handshake)
    };
    tokio::time::timeout(deadline, handshake).await.unwrap_or(Err(Refused::Timeout))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_http_answer_declares_its_length() {
        let text = super::plain_http_refused();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head} / {}", body.len());
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
