//! What every osModa daemon shares at its edge: the one type that owns shutdown, the signals
//! that fire it, binding a Unix socket safely, the hardened listener ([`server::serve`]) with its
//! protocol gate ([`gate`]), metrics ([`metrics`]), who holds a loopback port ([`peer`]), the
//! file-descriptor limit and systemd notifications.

pub mod api;
pub mod audit;
pub mod fuzz;
pub mod gate;
pub mod hangup;
pub mod metrics;
pub mod peer;
pub mod server;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

pub mod shutdown {
    //! One small type owns shutdown: every long-running task holds a [`Shutdown`].

    use tokio::sync::watch;

    /// Fires shutdown for every [`Shutdown`] of its pair; dropping it fires too.
    #[derive(Debug)]
    pub struct Trigger(watch::Sender<bool>);

    /// Resolves [`Shutdown::wait`] once shutdown was triggered. Cheap to clone.
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
        /// Waits until shutdown starts (at once if it already has, or if the trigger is gone).
        pub async fn wait(&mut self) {
            let _ = self.0.wait_for(|stop| *stop).await;
        }
    }
}

pub use shutdown::{channel as shutdown_channel, Shutdown, Trigger};

/// Logs to stderr (journald keeps it) at the level `RUST_LOG` names, `info` by default.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(io::stderr)
        .init();
}

/// A daemon's start-up once its state is open: binds `socket` with permissions `mode`
/// ([`bind_unix`]), fires the returned [`Shutdown`] on SIGTERM/SIGINT ([`fire_on_signals`]),
/// tells systemd it is ready and logs `<name> listening on <socket>`. Call it inside the tokio
/// runtime, then serve the listener until the shutdown fires.
///
/// # Errors
/// Binding fails (the message names the socket) or the signal handlers cannot be installed.
pub fn listen(name: &str, socket: &Path, mode: u32) -> io::Result<(UnixListener, Shutdown)> {
    let listener = bind_unix(socket, mode)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", socket.display())))?;
    let (trigger, shutdown) = shutdown_channel();
    fire_on_signals(trigger)?;
    notify_ready();
    tracing::info!("{name} listening on {}", socket.display());
    Ok((listener, shutdown))
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and returns the soft
/// limit in force afterwards (the caller sizes its connection budget from it). A failure to raise
/// (a seccomp filter, say) is logged and the current limit returned.
///
/// # Errors
/// Fails only when the limit cannot even be read.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
            Ok(soft)
        }
    }
}

/// The current soft limit on open files.
pub fn fd_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Tells systemd the daemon is ready (`READY=1`; a no-op outside a `Type=notify` unit).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Tells systemd the daemon is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Fire `trigger` on the first SIGTERM or SIGINT (systemd stop, Ctrl-C), telling systemd that
/// the daemon is stopping.
///
/// # Errors
/// Fails when the signal handlers cannot be installed.
pub fn fire_on_signals(trigger: Trigger) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        notify_stopping();
        trigger.fire();
    });
    Ok(())
}

/// Bind a Unix socket at `path` with permissions `mode`, creating the parent directory and
/// replacing a stale socket from a previous run — but never another kind of file.
///
/// # Errors
/// Fails when `path` exists and is not a socket, or on I/O errors.
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; move it away",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn binds_replaces_stale_sockets_and_refuses_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("run/d.sock");
        let first = bind_unix(&sock, 0o660).expect("bind");
        assert_eq!(
            std::fs::metadata(&sock).expect("meta").mode() & 0o777,
            0o660
        );
        drop(first); // leaves a stale socket file behind
        bind_unix(&sock, 0o600).expect("rebind over a stale socket");
        assert_eq!(
            std::fs::metadata(&sock).expect("meta").mode() & 0o777,
            0o600
        );

        let file = dir.path().join("precious");
        std::fs::write(&file, "data").expect("write");
        let err = bind_unix(&file, 0o600).expect_err("refuses a regular file");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "data");
    }

    #[tokio::test]
    async fn shutdown_reaches_every_clone_and_a_dropped_trigger_counts() {
        let (trigger, shutdown) = shutdown_channel();
        let mut a = shutdown.clone();
        let waiter = tokio::spawn(async move { a.wait().await });
        trigger.fire();
        waiter.await.expect("join");
        let mut b = shutdown;
        b.wait().await; // already fired: returns at once

        let (trigger, mut c) = shutdown_channel();
        drop(trigger);
        c.wait().await;
    }
}
