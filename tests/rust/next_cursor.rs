//! The `x-next-cursor` header of a paged answer on a daemon's Unix socket (the shared client
//! returns status and body only). Included by tests with `#[path]`.

/// The `x-next-cursor` header of `GET path` on `socket`, if any.
pub async fn next_cursor(socket: &std::path::Path, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("no answer in 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("x-next-cursor: ")
            .map(|_| l["x-next-cursor: ".len()..].trim().to_string())
    })
}
