//! Bytes both ways between the client and the destination until either side closes (each
//! half-close passed on), the tunnel is idle for the idle timeout, or the proxy shuts down.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use osmoda_daemon::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Buffer per direction.
const BUF: usize = 64 * 1024;

/// A stream that notes the time of its last successful read.
struct Tracked<S> {
    inner: S,
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_ms.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs the tunnel; `early` (bytes the client sent after its head) goes upstream first.
pub async fn run<C: AsyncRead + AsyncWrite + Unpin>(
    client: C,
    mut upstream: TcpStream,
    early: Vec<u8>,
    idle: Duration,
    mut shutdown: Shutdown,
) {
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    let start = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let mut a = Tracked {
        inner: client,
        start,
        last_ms: Arc::clone(&last_ms),
    };
    let mut b = Tracked {
        inner: upstream,
        start,
        last_ms: Arc::clone(&last_ms),
    };
    let watchdog = async {
        loop {
            let last = Duration::from_millis(last_ms.load(Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF, BUF) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel ended with an error");
            }
        }
        () = watchdog => tracing::debug!("tunnel idle for {} s; closed", idle.as_secs()),
        () = shutdown.wait() => {}
    }
}
