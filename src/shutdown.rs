//! SIGTERM and SIGINT, the two ways an operator or orchestrator stops us.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Installed signal handlers.
pub struct Signal {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signal {
    /// Installs the handlers; from now on the signals no longer kill the process.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves when SIGTERM or SIGINT arrives.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }

    /// Runs `work` unless a signal arrives first (`Ok(None)`).
    pub async fn run_until<T>(
        &mut self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<Option<T>> {
        tokio::select! {
            result = work => result.map(Some),
            () = self.received() => Ok(None),
        }
    }
}
