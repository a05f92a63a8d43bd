//! A fault-injecting TCP proxy in front of a real server: it can cut every
//! connection (RST), black-hole traffic (connections stay open, nothing is
//! forwarded: no FIN, no RST, like a dropped NAT entry) and add latency.
//! A black hole is either temporary and total ([`FaultProxy::blackhole`]: new
//! connections hang too, and traffic resumes when it ends) or permanent for the
//! connections open at the time ([`FaultProxy::blackhole_existing`]: those
//! never carry another byte, while new ones work, as after a NAT entry or a
//! failover dropped the old flows).

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
    /// Connections accepted before this index are black-holed for good.
    doomed_before: watch::Sender<usize>,
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
        let doomed_before = watch::Sender::new(0);
        let latency = watch::Sender::new(Duration::ZERO);
        let shared = Arc::new(Shared::default());
        let acceptor = tokio::spawn({
            let blackholed = blackholed.clone();
            let doomed_before = doomed_before.clone();
            let latency = latency.clone();
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let index = {
                        let mut accepted = shared.accepted.lock().unwrap();
                        *accepted += 1;
                        *accepted - 1
                    };
                    let gate = Gate {
                        index,
                        blackholed: blackholed.subscribe(),
                        doomed_before: doomed_before.subscribe(),
                    };
                    let relay = tokio::spawn(relay(client, upstream, gate, latency.subscribe()));
                    let mut relays = shared.relays.lock().unwrap();
                    relays.retain(|relay| !relay.is_finished());
                    relays.push(relay);
                }
            }
        });
        Self {
            addr,
            blackholed,
            doomed_before,
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

    /// Black-holes every connection open now, for good (until the proxy is
    /// dropped or [`FaultProxy::cut`]); connections made afterwards work.
    pub fn blackhole_existing(&self) {
        let accepted = self.accepted();
        self.doomed_before.send_replace(accepted);
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

/// Whether a connection may forward bytes now.
#[derive(Clone)]
struct Gate {
    index: usize,
    blackholed: watch::Receiver<bool>,
    doomed_before: watch::Receiver<usize>,
}

impl Gate {
    /// Waits until forwarding is allowed; `false` if the proxy is gone.
    async fn open(&mut self) -> bool {
        loop {
            let doomed = self.index < *self.doomed_before.borrow_and_update();
            if !doomed && !*self.blackholed.borrow_and_update() {
                return true;
            }
            let changed = tokio::select! {
                changed = self.blackholed.changed() => changed,
                changed = self.doomed_before.changed() => changed,
            };
            if changed.is_err() {
                return false;
            }
        }
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut gate: Gate,
    latency: watch::Receiver<Duration>,
) {
    // A black hole also swallows connection attempts: the handshake never answers.
    if !gate.open().await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    reset_on_drop(&client);
    reset_on_drop(&server);
    // As the real servers do: no Nagle delay on small messages.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, gate.clone(), latency.clone()),
        pump(server_read, client_write, gate, latency),
    );
}

#[allow(deprecated)] // a zero linger never blocks: the close becomes an immediate RST
fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: Gate,
    latency: watch::Receiver<Duration>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                // Even the FIN is swallowed while the connection is black-holed.
                if gate.open().await {
                    let _ = to.shutdown().await;
                }
                return;
            }
            Ok(read) => read,
        };
        if !gate.open().await {
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
