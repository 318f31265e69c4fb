//! Ring 1 end to end, inside a network namespace with only loopback: a sandboxed `curl`
//! (`osmoda_sandbox::ring`, its own network namespace, seccomp, `nobody`) reaches a TLS server
//! on loopback only through the real `osmoda-egress` binary — its relay inside the sandbox,
//! the daemon outside on its Unix socket — with a token for one name, and fails for every other
//! name, the address itself, and any way around the proxy.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::dns;
use common::procs::{cert, daemon, tls_server, Kill};
use common::*;
use osmoda_sandbox::{Bind, Boundary, Network, RingSpec};

#[test]
fn a_ring1_sandbox_reaches_only_its_granted_name_through_egress() {
    in_netns("ring1", || {
        let rt = runtime();
        let keys = Keys::new();
        let dir = keys.dir.path().to_path_buf();
        let z = zone_of(&[
            ("api.allowed.test", "127.0.0.2"),
            ("other.allowed.test", "127.0.0.3"),
        ]);
        let dns = rt.block_on(dns::serve(z));
        // The CA file is bound into the sandbox (a declared read-only bind), readable by nobody.
        let certs = tempfile::tempdir_in("/var/tmp").unwrap();
        let certs_dir: PathBuf = certs.path().to_path_buf();
        std::fs::set_permissions(&certs_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        cert(&certs_dir, "api.allowed.test");
        std::fs::set_permissions(
            certs_dir.join("cert.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let _tls = Kill(tls_server(&certs_dir, "127.0.0.2:8443"));
        let _tls3 = Kill(tls_server(&certs_dir, "127.0.0.3:8443"));
        // Both servers are inside the allow range: only the token tells them apart.
        let caps: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[443, 8443])];
        let cfg = config(
            &keys,
            "127.0.0.1:19999".parse().unwrap(),
            caps,
            &["127.0.0.2/32", "127.0.0.3/32"],
            dns,
        );
        let cfg_path = dir.join("egress.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let _d = daemon(BIN, &dir, &cfg_path);
        let token = keys.token(&[("web", &["api.allowed.test"], &[8443])]);
        let cacert = certs_dir.join("cert.pem").display().to_string();

        let run = |script: String| {
            let mut spec = RingSpec::new(["sh".to_string(), "-c".to_string(), script]);
            spec.timeout = Duration::from_secs(60);
            spec.binds = vec![Bind {
                path: certs_dir.clone(),
                writable: false,
            }];
            spec.network = Network::Egress {
                relay_bin: PathBuf::from(BIN),
                proxy_socket: dir.join("egress-proxy.sock"),
                token: token.clone(),
            };
            rt.block_on(Boundary::osmoda_default().run_ring(&spec))
                .unwrap()
        };
        let curl = |url: &str, extra: &str| {
            format!("curl -sS --max-time 20 --cacert {cacert} {extra} {url} >/dev/null 2>/tmp/err; echo \"$? $(head -n 1 /tmp/err)\"")
        };
        // Allowed: the granted name, through HTTPS_PROXY (curl never resolves the name).
        let out = run(format!(
            "{}; curl -sS --max-time 20 --cacert {cacert} https://api.allowed.test:8443/ | head -c 200",
            curl("https://api.allowed.test:8443/", "")
        ));
        let text = out.output.stdout_lossy();
        assert!(text.starts_with("0 \n"), "{out:?}");
        assert!(text.contains("s_server"), "{out:?}");
        // Everything else fails: another name in the allow range, an address outside it,
        // another port, and every way around the proxy (no DNS, no route: the sandbox's
        // loopback is its own, so neither the servers nor the proxy's TCP port are there). An
        // address literal inside an allow range would pass, by the allow range's definition.
        let script = [
            curl("https://other.allowed.test:8443/", ""),
            curl("https://127.0.0.4:8443/", ""),
            curl("https://api.allowed.test:443/", ""),
            curl("https://api.allowed.test:8443/", "--noproxy '*'"),
            curl(
                "https://api.allowed.test:8443/",
                "--noproxy '*' --resolve api.allowed.test:8443:127.0.0.2",
            ),
            curl(
                "https://api.allowed.test:8443/",
                "--proxy http://127.0.0.1:19999",
            ),
        ]
        .join("; ");
        let out = run(script);
        let lines: Vec<String> = out
            .output
            .stdout_lossy()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 6, "{out:?}");
        for (i, why) in ["403", "403", "403", "resolve", "", ""].iter().enumerate() {
            assert!(!lines[i].starts_with("0 "), "{i}: {out:?}");
            assert!(lines[i].contains(why), "{i} ({why}): {out:?}");
        }
    });
}
