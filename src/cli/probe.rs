//! A minimal HTTP/1.1 GET for local health probes (container HEALTHCHECK, the
//! benchmark), so the runtime image needs no curl.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status code of `GET path` on `address`, or `None` if there is no
/// well-formed answer within `timeout`.
pub async fn status(address: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        if !head.starts_with(b"HTTP/1.") {
            return None;
        }
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(timeout, probe).await.ok().flatten()
}

/// The address to probe for a listen address: a wildcard becomes loopback.
pub fn local(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let loopback = if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, listen.port())
    } else {
        listen
    }
}
