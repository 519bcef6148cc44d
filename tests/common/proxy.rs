//! A small HTTP proxy on 127.0.0.1:0: `CONNECT host:port` opens a tunnel (bytes copied both ways, never
//! read), any other request line (absolute form, `POST http://host:port/ …`) is relayed to its host as is.
//! It records what it was asked, and can require credentials, refuse, or stay silent on cue.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Relay,
    /// Answer every request with this status (407, 403, 502...) and close.
    Refuse(u16),
    /// Accept the connection, read the request, never answer.
    Silent,
}

/// One request as the proxy saw it: its request line and `Proxy-Authorization` header.
#[derive(Debug, Clone)]
pub(crate) struct Asked {
    pub request_line: String,
    pub proxy_authorization: Option<String>,
}

#[derive(Default)]
struct State {
    asked: Vec<Asked>,
    /// Every byte the proxy carried from the client after the request head (the tunnel's traffic).
    carried: Vec<u8>,
}

#[derive(Clone)]
pub(crate) struct TestProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    /// When set, requests without this `Proxy-Authorization` get 407.
    required_authorization: Option<String>,
}

impl TestProxy {
    pub(crate) async fn start(mode: Mode, required_authorization: Option<&str>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = TestProxy {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
            required_authorization: required_authorization.map(str::to_owned),
        };
        let server = proxy.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().connection(stream));
            }
        });
        proxy
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn asked(&self) -> Vec<Asked> {
        self.state.lock().unwrap().asked.clone()
    }

    pub(crate) fn carried(&self) -> Vec<u8> {
        self.state.lock().unwrap().carried.clone()
    }

    async fn connection(self, stream: TcpStream) {
        let mut client = BufReader::new(stream);
        let mut head = String::new();
        let mut request_line = String::new();
        if client.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        head.push_str(&request_line);
        let mut proxy_authorization = None;
        loop {
            let mut line = String::new();
            if client.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.trim_end().split_once(':') {
                if name.eq_ignore_ascii_case("proxy-authorization") {
                    proxy_authorization = Some(value.trim().to_owned());
                }
            }
        }
        let request_line = request_line.trim_end().to_owned();
        self.state
            .lock()
            .unwrap()
            .asked
            .push(Asked { request_line: request_line.clone(), proxy_authorization: proxy_authorization.clone() });
        let mode = *self.mode.lock().unwrap();
        let refuse = match mode {
            Mode::Silent => {
                // Hold the connection open without a word until the client gives up.
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
                return;
            }
            Mode::Refuse(status) => Some(status),
            Mode::Relay
                if self.required_authorization.is_some() && proxy_authorization != self.required_authorization =>
            {
                Some(407)
            }
            Mode::Relay => None,
        };
        if let Some(status) = refuse {
            let answer = format!("HTTP/1.1 {status} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = client.get_mut().write_all(answer.as_bytes()).await;
            return;
        }
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let upstream_addr = if method == "CONNECT" {
            target.to_owned()
        } else {
            // Absolute form: http://host:port/...
            target.trim_start_matches("http://").split('/').next().unwrap_or("").to_owned()
        };
        let Ok(mut upstream) = TcpStream::connect(&upstream_addr).await else {
            let _ = client.get_mut().write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
            return;
        };
        if method == "CONNECT" {
            if client.get_mut().write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
                return;
            }
        } else if upstream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // Bytes already buffered after the head belong to the stream.
        let buffered = client.buffer().to_vec();
        if !buffered.is_empty() {
            self.state.lock().unwrap().carried.extend_from_slice(&buffered);
            if upstream.write_all(&buffered).await.is_err() {
                return;
            }
        }
        let client = client.into_inner();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut upstream_read, mut upstream_write) = upstream.into_split();
        let state = self.state.clone();
        let upward = async move {
            let mut buf = [0u8; 8192];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                state.lock().unwrap().carried.extend_from_slice(&buf[..n]);
                if upstream_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = upstream_write.shutdown().await;
        };
        let downward = async move {
            let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        tokio::join!(upward, downward);
    }
}
