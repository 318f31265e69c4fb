//! The real binary and real TLS around it: a self-signed certificate and `openssl s_server`
//! (real TLS), the daemon started and awaited through its `READY=1`, and a guard that kills a
//! child when a test fails. Also used by agentd's `tests/sandbox.rs`.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills its child when dropped, so a failing assertion leaves no process behind.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for `name` (openssl, real TLS).
pub fn cert(dir: &Path, name: &str) {
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .args([
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `openssl s_server -www` on `addr`, returned once it printed ACCEPT.
pub fn tls_server(dir: &Path, addr: &str) -> Child {
    let mut c = Command::new("openssl")
        .args(["s_server", "-www", "-accept", addr])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains("ACCEPT") {
        line.clear();
    }
    assert!(line.contains("ACCEPT"), "s_server did not start");
    c
}

/// Starts the daemon and waits for its READY=1.
pub fn daemon(bin: &str, dir: &Path, config: &Path) -> Kill {
    let notify = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&notify).unwrap();
    let child = Kill(
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(dir.join("egress.sock"))
            .arg("--proxy-socket")
            .arg(dir.join("egress-proxy.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--agentd-socket")
            .arg(dir.join("agentd.sock"))
            .env("NOTIFY_SOCKET", &notify)
            .spawn()
            .unwrap(),
    );
    // A daemon that fails to start never says READY: fail the test instead of hanging.
    rx.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        let n = rx
            .recv(&mut buf)
            .expect("osmoda-egress did not become ready (its stderr above says why)");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            return child;
        }
    }
}
