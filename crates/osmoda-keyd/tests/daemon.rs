//! The real osmoda-keyd binary as the NixOS unit runs it: the key-encryption secret comes from
//! the systemd credential `secret` (`$CREDENTIALS_DIRECTORY`, what `LoadCredential` provides)
//! before the `secret_file` keyd.json names; readiness and stopping are told on
//! `$NOTIFY_SOCKET`; SIGTERM ends it cleanly; and with every log line on (`RUST_LOG=trace`) no
//! imported key appears in its output, in any form.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// The binary with the flags the module passes, its output in `log`, told readiness on a
/// socket of its own.
struct Daemon {
    child: Child,
    notify: UnixDatagram,
    log: PathBuf,
}

impl Daemon {
    fn spawn(env: &Env, credentials: Option<&Path>, name: &str) -> Daemon {
        let notify_path = env.dir.path().join(format!("{name}.notify"));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let log = env.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_osmoda-keyd"));
        cmd.arg("--socket")
            .arg(env.socket())
            .arg("--config")
            .arg(env.config())
            .arg("--state-dir")
            .arg(env.dir.path().join("keyd-bin"))
            .arg("--agentd-socket")
            .arg(env.dir.path().join("agentd.sock"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "trace")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(dir) = credentials {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            notify,
            log,
        }
    }

    /// Waits for `want` (`READY=1`, `STOPPING=1`) on the notify socket.
    fn told(&self, want: &str) {
        let mut buf = [0u8; 512];
        loop {
            let n = self
                .notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} from osmoda-keyd: {e}\n{}", self.output()));
            if String::from_utf8_lossy(&buf[..n]).contains(want) {
                return;
            }
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; returns the exit status once it has ended.
    fn stop(mut self) -> (std::process::ExitStatus, Daemon) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.told("STOPPING=1");
        (self.child.wait().unwrap(), self)
    }

    /// Waits for a start that must fail; returns its output.
    fn refused(mut self) -> String {
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "keyd started: {}", self.output());
        self.output()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_way_credential_secret_readiness_sigterm_and_no_key_in_the_logs() {
    let mut env = Env::new(json!({ "chains": {
        "solana": { "chain_ids": [], "per_tx_max": "10000000", "daily_limit": "100000000",
                    "approval_threshold": null, "recipient_allowlist": null } }, "wallets": {} }))
    .await;
    env.stop_keyd().await;
    // keyd.json names secretFile as the module renders it; the unit's user cannot read that
    // path (here it does not exist at all): only the credential can open the keys.
    let secret_file = env.dir.path().join("secrets/keyd-master");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.config()).unwrap()).unwrap();
    cfg["secret_file"] = json!(secret_file);
    std::fs::write(env.config(), cfg.to_string()).unwrap();
    let creds = env.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let credential = "the credential's secret, 32 bytes or so";
    write_private(&creds.join("secret"), credential.as_bytes(), 0o400);

    let keyd = Daemon::spawn(&env, Some(&creds), "first");
    keyd.told("READY=1");
    let (s, eth) = env
        .post("/wallet/create", json!({ "chain": "ethereum", "label": "imported",
            "import": { "format": "keystore_v3", "keystore": pbkdf2_keystore(), "password": "testpassword" } }))
        .await;
    assert_eq!(s, 200, "{eth}");
    let (s, sol) = env
        .post(
            "/wallet/create",
            json!({ "chain": "solana", "label": "sol",
            "import": { "format": "solana_keypair", "keypair": rfc8032_keypair() } }),
        )
        .await;
    assert_eq!(s, 200, "{sol}");
    let sol = sol["id"].as_str().unwrap().to_string();
    let sign =
        json!({ "wallet_id": sol, "payload": { "type": "offchain_message", "message": "hello" } });
    let send = json!({ "wallet_id": sol, "to": "4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA", "amount": "1000",
        "blockhash": bs58::encode([42u8; 32]).into_string() });
    assert_eq!(env.post("/wallet/sign", sign.clone()).await.0, 200);
    assert_eq!(env.post("/wallet/send", send).await.0, 200);
    // A denial and a bad request are logged too.
    let (s, r) = env
        .post("/wallet/sign", json!({ "wallet_id": eth["id"], "payload": { "type": "personal_sign", "message": "x" } }))
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("chain")),
        "{r}"
    );
    let (s, _) = env
        .post("/wallet/create", json!({ "chain": "solana", "label": "bad",
            "import": { "format": "solana_keypair", "keypair": rfc8032_keypair()[..63].to_vec() } }))
        .await;
    assert_eq!(s, 400);

    let (status, keyd) = keyd.stop();
    assert!(
        status.success(),
        "SIGTERM ends keyd cleanly: {status}\n{}",
        keyd.output()
    );
    let log = keyd.output();
    assert!(log.contains("listening on"), "the log was on: {log}");
    for (what, needle) in key_needles() {
        assert!(
            !contains(log.as_bytes(), &needle),
            "{what} in keyd's log:\n{log}"
        );
    }

    // The keys were sealed under the credential: without it keyd reads secret_file, which is
    // missing, and does not start (nor makes a secret of its own)...
    let out = Daemon::spawn(&env, None, "no-credential").refused();
    assert!(out.contains("keyd-master"), "{out}");
    assert!(!env.dir.path().join("keyd-bin/secret").exists());
    // ...another credential does not open them...
    let other = env.dir.path().join("other-credentials");
    std::fs::create_dir(&other).unwrap();
    write_private(
        &other.join("secret"),
        b"another secret of enough length",
        0o400,
    );
    let out = Daemon::spawn(&env, Some(&other), "other-credential").refused();
    assert!(out.contains("does not open the keys"), "{out}");
    // ...and the credential's bytes in secret_file do: the same wallets sign again.
    std::fs::create_dir_all(secret_file.parent().unwrap()).unwrap();
    write_private(&secret_file, credential.as_bytes(), 0o600);
    let keyd = Daemon::spawn(&env, None, "secret-file");
    keyd.told("READY=1");
    assert_eq!(env.post("/wallet/sign", sign).await.0, 200);
    let (status, keyd) = keyd.stop();
    assert!(status.success(), "{}", keyd.output());

    // A secret others can read is refused, wherever it comes from: secret_file open to the
    // group or everyone, a credential directory whose file is not private (systemd's are 0400).
    use std::os::unix::fs::PermissionsExt as _;
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Daemon::spawn(&env, None, &format!("secret-file-{mode:o}")).refused();
        assert!(
            out.contains(&format!("is open to other users (mode {mode:04o})")),
            "{out}"
        );
        assert!(
            out.contains("keyd-master") && !out.contains(credential),
            "{out}"
        );
    }
    std::fs::set_permissions(creds.join("secret"), std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = Daemon::spawn(&env, Some(&creds), "credential-0444").refused();
    assert!(out.contains("is open to other users (mode 0444)"), "{out}");
    assert!(!out.contains(credential), "{out}");
}

/// Writes a secret file with `mode`, as systemd (credentials: 0400) or an operator (0600) does.
fn write_private(path: &std::path::Path, bytes: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
