//! A fault-injecting TCP proxy in front of a real server: it can cut every
//! connection (RST), black-hole traffic (connections stay open, nothing is
//! forwarded: no FIN, no RST, like a dropped NAT entry) and add latency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Shared {
    relays: Mutex<Vec<JoinHandle<()>>>,
    accepted: Mutex<usize>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    blackholed: watch::Sender<bool>,
    latency: watch::Sender<Duration>,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let blackholed = watch::Sender::new(false);
        let latency = watch::Sender::new(Duration::ZERO);
        let shared = Arc::new(Shared::default());
        let acceptor = tokio::spawn({
            let blackholed = blackholed.clone();
            let latency = latency.clone();
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    *shared.accepted.lock().unwrap() += 1;
                    let relay = tokio::spawn(relay(
                        client,
                        upstream,
                        blackholed.subscribe(),
                        latency.subscribe(),
                    ));
                    let mut relays = shared.relays.lock().unwrap();
                    relays.retain(|relay| !relay.is_finished());
                    relays.push(relay);
                }
            }
        });
        Self {
            addr,
            blackholed,
            latency,
            shared,
            acceptor,
        }
    }

    /// Resets every open connection; new ones are accepted as usual.
    pub fn cut(&self) {
        for relay in self.shared.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Stops (or resumes) forwarding in both directions without closing anything.
    pub fn blackhole(&self, on: bool) {
        self.blackholed.send_replace(on);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency.send_replace(latency);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.shared.accepted.lock().unwrap()
    }

    /// A URL like `base` with its host and port replaced by the proxy's.
    pub fn url_for(&self, base: &str) -> String {
        let (scheme, rest) = base.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let userinfo = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}{}/{path}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut blackholed: watch::Receiver<bool>,
    latency: watch::Receiver<Duration>,
) {
    // A black hole also swallows connection attempts: the handshake never answers.
    if blackholed.wait_for(|on| !on).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    reset_on_drop(&client);
    reset_on_drop(&server);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(
            client_read,
            server_write,
            blackholed.clone(),
            latency.clone()
        ),
        pump(server_read, client_write, blackholed, latency),
    );
}

#[allow(deprecated)] // a zero linger never blocks: the close becomes an immediate RST
fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blackholed: watch::Receiver<bool>,
    latency: watch::Receiver<Duration>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        if blackholed.wait_for(|on| !on).await.is_err() {
            return;
        }
        let delay = *latency.borrow();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
