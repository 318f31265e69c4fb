//! One small type owns shutdown: every long-running task holds a [`Shutdown`].

use tokio::sync::watch;

/// Sends the shutdown signal once; dropping it also signals.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A handle that resolves when shutdown has been requested. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and handle.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Ask every holder of the matching [`Shutdown`] to stop.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown was requested (or the trigger was dropped).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
