//! `POST /sandbox/exec` against a real agentd, each test in a network namespace it creates
//! with only loopback. Ring 2: no inet socket, no `/etc/shadow`, no agentd state or socket,
//! killed at its timeout with its children, one `sandbox.exec` event. Ring 1: the command
//! reaches a loopback TLS server through the real osmoda-egress with the token agentd minted
//! for its grants, and nothing else. Bad input runs and records nothing.

mod common;

#[path = "../../osmoda-sandbox/tests/support/netns.rs"]
mod netns;

#[path = "../../osmoda-egress/tests/common/dns.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod dns;

#[path = "../../osmoda-egress/tests/common/procs.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod procs;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{ClientExt, Daemon};
use netns::in_netns;
use serde_json::{json, Value};

async fn last_id(d: &Daemon) -> Value {
    d.agent().get_ok("/events/log?order=desc&limit=1").await[0]["id"].clone()
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .count()
}

#[test]
fn ring2_through_agentd() {
    in_netns("ring2_through_agentd", || async {
        let d = Daemon::start().await;
        let state = d.state.state_dir.clone();
        let script = format!(
            "perl -e 'use Socket; socket(my $s, AF_INET, SOCK_STREAM, 0) ? print \"inet opened\\n\" : print \"inet refused: $!\\n\"'; \
             cat /etc/shadow; echo shadow=$?; ls {state}; echo state=$?; \
             perl -e 'use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_un(\"{sock}\")) ? print \"connected\\n\" : print \"agentd: $!\\n\"'",
            state = state.display(),
            sock = d.socket.display()
        );
        let r = d
            .agent()
            .post_ok(
                "/sandbox/exec",
                &json!({ "command": script, "timeout_sec": 30 }),
            )
            .await;
        let out = r["stdout"].as_str().expect("stdout");
        assert_eq!(r["ring"], 2, "{r}");
        assert!(out.contains("inet refused: Operation not permitted"), "{r}");
        assert!(out.contains("shadow=1") && out.contains("state=2"), "{r}");
        assert!(out.contains("agentd: No such file or directory"), "{r}");
        assert!(!out.contains("connected"), "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        let ev = d
            .agent()
            .get_ok("/events/log?type=sandbox.exec&order=desc&limit=1")
            .await[0]
            .clone();
        assert_eq!(ev["id"], r["event_id"]);
        let p: Value =
            serde_json::from_str(ev["payload"].as_str().expect("payload")).expect("json");
        assert_eq!(p["ring"], 2);
        assert_eq!(p["limits"]["memory_bytes"], 512u64 << 20);
        assert!(p["limits"]["enforced_by"].is_string(), "{p}");

        // Killed at its timeout, with every child.
        let marker = format!("{}", 8_000_000 + std::process::id());
        let r = d
            .agent()
            .post_ok(
                "/sandbox/exec",
                &json!({ "command": format!("sleep {marker} & (sleep {marker} &); sleep {marker}"), "timeout_sec": 1 }),
            )
            .await;
        assert_eq!(
            (r["timed_out"].clone(), r["exit_code"].clone()),
            (json!(true), Value::Null),
            "{r}"
        );
        assert_eq!(processes_with(&marker), 0);

        // Bad input runs and records nothing.
        let before = last_id(&d).await;
        for (body, status, needle) in [
            (json!({ "timeout_sec": 5 }), 400, "exactly one of"),
            (
                json!({ "command": "true", "argv": ["true"], "timeout_sec": 5 }),
                400,
                "exactly one of",
            ),
            (
                json!({ "argv": [], "timeout_sec": 5 }),
                400,
                "exactly one of",
            ),
            (
                json!({ "command": "true", "timeout_sec": 0 }),
                400,
                "timeout_sec",
            ),
            (
                json!({ "command": "true", "timeout_sec": 601 }),
                400,
                "timeout_sec",
            ),
            (
                json!({ "command": "true", "timeout_sec": 5, "memory_mb": 1 }),
                400,
                "memory_mb",
            ),
            (
                json!({ "command": "true", "timeout_sec": 5, "max_tasks": 100000 }),
                400,
                "max_tasks",
            ),
            (
                json!({ "command": "true", "timeout_sec": 5, "env": { "HTTPS_PROXY": "x" } }),
                400,
                "set by the sandbox",
            ),
            (
                json!({ "command": "true", "timeout_sec": 5, "cwd": "relative" }),
                400,
                "cwd",
            ),
            (
                json!({ "command": "true", "timeout_sec": 5, "user": "root" }),
                422,
                "unknown field",
            ),
            // Capabilities need egress, which this agentd has not got.
            (
                json!({ "command": "true", "timeout_sec": 5, "capabilities": ["web"] }),
                503,
                "egress is not configured",
            ),
        ] {
            let resp = d
                .agent()
                .post("/sandbox/exec", &body)
                .await
                .expect("request");
            let text = resp.body.to_string();
            assert_eq!(resp.status, status, "{body}: {text}");
            assert!(text.contains(needle), "{body}: {text}");
        }
        assert_eq!(last_id(&d).await, before);
        d.stop().await;
    });
}

/// The osmoda-egress binary of this build (beside the test's `deps` directory): the relay
/// inside Ring 1 and the proxy outside. `cargo test --workspace` builds it.
fn egress_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("osmoda-egress");
    bin.is_file().then_some(bin)
}

#[test]
fn ring1_through_agentd_and_the_real_egress() {
    let Some(bin) = egress_bin() else {
        println!("skipped: ring1_through_agentd needs the osmoda-egress binary (cargo build -p osmoda-egress)");
        return;
    };
    in_netns("ring1_through_agentd", move || async move {
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut z: dns::Zone = HashMap::new();
        z.insert(
            "api.allowed.test".into(),
            vec![dns::Rec::Ip("127.0.0.2".parse().expect("ip"))],
        );
        z.insert(
            "other.allowed.test".into(),
            vec![dns::Rec::Ip("127.0.0.3".parse().expect("ip"))],
        );
        let ns = dns::serve(z).await;
        // The capability declares the certificates' directory read-only and a scratch
        // directory writable: the sandbox sees those and nothing else of the host's /var/tmp.
        let certs = dir.path().join("certs");
        let scratch = dir.path().join("scratch");
        for (d, mode) in [(&certs, 0o755), (&scratch, 0o777)] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        procs::cert(&certs, "api.allowed.test");
        std::fs::set_permissions(
            certs.join("cert.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let _tls = procs::Kill(procs::tls_server(&certs, "127.0.0.2:8443"));
        let _tls3 = procs::Kill(procs::tls_server(&certs, "127.0.0.3:8443"));
        let mut egress = json!({
            "listen": "127.0.0.1:19999",
            "capabilities": { "web": { "domains": ["*.allowed.test"], "ports": [443, 8443],
                                       "read_only_paths": [certs], "writable_paths": [scratch] } },
            "public_key_file": dir.path().join("pub/public.key"),
            "revocation_file": dir.path().join("pub/revoked"),
            "allow_ranges": ["127.0.0.2/32", "127.0.0.3/32"],
            "nameservers": [ns.to_string()],
        });
        let cfg = dir.path().join("egress.json");
        std::fs::write(&cfg, serde_json::to_vec(&egress).expect("json")).expect("write");
        let settings = agentd::Settings {
            egress_config: Some(cfg.clone()),
            egress_proxy_socket: Some(dir.path().join("egress-proxy.sock")),
            egress_bin: Some(bin.clone()),
            ..Default::default()
        };
        let d = Daemon::start_with(settings).await;
        // Before egress runs: 503, nothing recorded.
        let before = last_id(&d).await;
        let resp = d
            .agent()
            .post(
                "/sandbox/exec",
                &json!({ "command": "true", "timeout_sec": 5, "capabilities": ["web"] }),
            )
            .await
            .expect("request");
        assert_eq!(resp.status, 503, "{}", resp.body);
        assert!(
            resp.body.to_string().contains("no proxy socket"),
            "{}",
            resp.body
        );
        assert_eq!(last_id(&d).await, before);
        let _proxy = procs::daemon(&bin.display().to_string(), dir.path(), &cfg);
        let curl = |url: &str| {
            format!("curl -sS --max-time 20 --cacert {} {url} >/dev/null 2>/tmp/e; echo \"$? $(head -n 1 /tmp/e)\"", certs.join("cert.pem").display())
        };
        let script = [
            format!(
                "cat > {}/in; touch {}/x 2>/dev/null || echo read-only",
                scratch.display(),
                certs.display()
            ),
            curl("https://api.allowed.test:8443/"),
            curl("https://other.allowed.test:8443/"),
            curl("https://api.allowed.test:443/"),
        ]
        .join("; ");
        let r = d
            .agent()
            .post_ok(
                "/sandbox/exec",
                &json!({ "command": script, "timeout_sec": 60, "stdin": "through stdin",
                         "capabilities": { "web": { "domains": ["api.allowed.test"], "ports": [8443] } } }),
            )
            .await;
        let lines: Vec<&str> = r["stdout"].as_str().expect("stdout").lines().collect();
        assert_eq!(r["ring"], 1, "{r}");
        assert_eq!(lines.len(), 4, "{r}");
        assert_eq!(lines[0], "read-only", "{r}");
        assert!(lines[1].starts_with("0 "), "{r}");
        assert!(lines[2].contains("403") && lines[3].contains("403"), "{r}");
        assert_eq!(
            std::fs::read_to_string(scratch.join("in")).expect("written"),
            "through stdin"
        );
        assert_eq!(
            r["capabilities"]["web"]["domains"],
            json!(["api.allowed.test"])
        );
        let p: Value = serde_json::from_str(
            d.agent()
                .get_ok("/events/log?type=sandbox.exec&order=desc&limit=1")
                .await[0]["payload"]
                .as_str()
                .expect("payload"),
        )
        .expect("json");
        assert_eq!(p["ring"], 1);
        assert_eq!(p["token_id"], r["token_id"]);
        assert!(
            !p.to_string().contains("osm1."),
            "no token in the ledger: {p}"
        );

        // A widening, an undeclared capability, or one that declares agentd's state or a
        // login file is refused before anything runs.
        egress["capabilities"]["state"] = json!({ "domains": ["x.test"], "ports": [443], "read_only_paths": [d.state.state_dir] });
        egress["capabilities"]["login"] =
            json!({ "domains": ["x.test"], "ports": [443], "writable_paths": ["/etc/shadow"] });
        // /root holds root's shell start-up files and ~/.ssh: login files, never a bind.
        egress["capabilities"]["home"] =
            json!({ "domains": ["x.test"], "ports": [443], "writable_paths": ["/root"] });
        // Kernel interfaces and bus sockets are never a bind, read-only or not.
        egress["capabilities"]["proc"] =
            json!({ "domains": ["x.test"], "ports": [443], "read_only_paths": ["/proc"] });
        egress["capabilities"]["dev"] =
            json!({ "domains": ["x.test"], "ports": [443], "writable_paths": ["/dev/shm"] });
        egress["capabilities"]["bus"] =
            json!({ "domains": ["x.test"], "ports": [443], "read_only_paths": ["/run/dbus"] });
        std::fs::write(&cfg, serde_json::to_vec(&egress).expect("json")).expect("write");
        let before = last_id(&d).await;
        for (caps, needle) in [
            (json!({ "web": { "domains": ["*.test"] } }), "only narrow"),
            (json!(["npm"]), "not declared"),
            (json!(["state"]), "capabilities.state"),
            (json!(["login"]), "capabilities.login"),
            (json!(["home"]), "capabilities.home"),
            (
                json!(["proc"]),
                "capabilities.proc: /proc: kernel interfaces",
            ),
            (
                json!(["dev"]),
                "capabilities.dev: /dev/shm: kernel interfaces",
            ),
            (json!(["bus"]), "capabilities.bus"),
        ] {
            let resp = d
                .agent()
                .post(
                    "/sandbox/exec",
                    &json!({ "command": "true", "timeout_sec": 5, "capabilities": caps }),
                )
                .await
                .expect("request");
            let text = resp.body.to_string();
            assert_eq!(resp.status, 403, "{text}");
            assert!(text.contains(needle), "{text}");
        }
        assert_eq!(last_id(&d).await, before);
        d.stop().await;
    });
}
