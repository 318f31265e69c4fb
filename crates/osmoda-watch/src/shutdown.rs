//! The one type that owns shutdown: every long-running task holds a [`Shutdown`].

use tokio::sync::watch;

/// Fires shutdown for every [`Shutdown`] cloned from its pair.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Resolves [`Shutdown::wait`] once shutdown was triggered.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Starts shutdown.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Waits until shutdown starts (immediately if it already has, or if the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}
