//! Command actions in the ring sandbox a routine declares, run by a real agentd's
//! `/sandbox/exec` with real bubblewrap, each test in a network namespace it makes with only
//! loopback (as agentd's `tests/sandbox.rs`): a ring2 routine's command has no network and no
//! daemon socket while a boundary one (the default) keeps both; a ring1 routine reaches only
//! its capability's name through the real osmoda-egress; the run's `sandbox.exec` event names
//! the run, so a routine fired by it runs once per seed; a bad declaration is refused by
//! `check-config` and `/routine/add` with a message naming the option, nothing run or
//! committed.
#![allow(clippy::unwrap_used)]

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

use common::{
    options, scratch, settle, subscribed, write_config, write_config_full, Agentd, Routines,
};
use netns::in_netns;
use serde_json::{json, Value};

fn manual(action: Value) -> Value {
    json!({ "enable": true, "trigger": { "type": "interval", "seconds": 86400 }, "action": action })
}

fn sh(script: &str, extra: Value) -> Value {
    let mut a = json!({ "type": "command", "command": ["sh", "-c", script], "timeout_secs": 60 });
    if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    a
}

async fn run(r: &Routines, name: &str) -> osmoda_routines::history::Run {
    let (s, v) = r.post(&format!("/routine/trigger/{name}"), json!({})).await;
    assert_eq!(s, 200, "{v}");
    r.wait_run(v["run_id"].as_i64().unwrap()).await
}

/// The `sandbox.exec` event agentd recorded for run `id` (named in its actor).
fn exec_event(agentd: &Agentd, id: i64) -> (osmoda_ledger::Event, Value) {
    let mine: Vec<_> = agentd
        .events("sandbox.exec")
        .into_iter()
        .filter(|e| e.actor.contains(&format!("[action=routine-run.{id},")))
        .collect();
    assert_eq!(mine.len(), 1, "one sandbox.exec for run {id}: {mine:#?}");
    let p = serde_json::from_str(&mine[0].payload).unwrap();
    (mine[0].clone(), p)
}

#[test]
fn a_ring2_routine_has_no_network_and_no_daemon_socket() {
    in_netns(
        "a_ring2_routine_has_no_network_and_no_daemon_socket",
        || async {
            let dir = scratch();
            let agentd = Agentd::start(dir.path(), None);
            let opts = options(dir.path(), &agentd.socket);
            let probe = format!(
            "perl -e 'use Socket; socket(my $s, AF_INET, SOCK_STREAM, 0) ? print \"inet opened\\n\" : print \"inet refused: $!\\n\"'; \
             for s in {agentd} {routines}; do perl -e 'use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_un($ARGV[0])) ? print \"connected\\n\" : print \"socket: $!\\n\"' $s; done; \
             ls {state} >/dev/null 2>&1; echo state=$?; cat /etc/shadow >/dev/null 2>&1; echo shadow=$?; id -un",
            agentd = agentd.socket.display(),
            routines = opts.socket.display(),
            state = dir.path().join("agentd").display(),
        );
            write_config(
                dir.path(),
                json!({
                    "scan": manual(sh(&probe, json!({ "sandbox": "ring2", "memory_mb": 64 }))),
                    "plain": manual(sh(&probe, json!({}))),
                    // Fired by the ring run's own event, and its own run writes one too: once
                    // per seed.
                    "on-exec": { "enable": true, "trigger": { "type": "event", "match": "sandbox.exec" },
                                 "action": { "type": "command", "command": ["true"], "timeout_secs": 30, "sandbox": "ring2" },
                                 "concurrency": "queue" },
                }),
            );
            let r = Routines::start(opts).await;
            subscribed(&r).await;

            let scan = run(&r, "scan").await;
            let out = scan.output.clone().unwrap();
            assert_eq!(
                (scan.status.as_str(), scan.exit),
                ("ok", Some(0)),
                "{scan:?}"
            );
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(
                lines,
                [
                    "inet refused: Operation not permitted",
                    "socket: No such file or directory",
                    "socket: No such file or directory",
                    "state=2",
                    "shadow=1",
                    "nobody",
                ],
                "{out}"
            );
            let (ev, p) = exec_event(&agentd, scan.id);
            assert!(!ev.actor.starts_with("osmoda-routines["), "{ev:?}");
            assert_eq!(p["ring"], 2, "{p}");
            assert_eq!(p["limits"]["memory_bytes"], 64u64 << 20, "{p}");
            assert_eq!(
                p["env"],
                json!(["OSMODA_ROUTINE", "OSMODA_RUN_ID", "OSMODA_TRIGGER"])
            );

            // The same command without a declaration runs behind the boundary, as before: the
            // machine's network and agentd's socket are there (routines' own socket is not).
            let plain = run(&r, "plain").await;
            let out = plain.output.clone().unwrap();
            assert_eq!(plain.status, "ok", "{plain:?}");
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines[0], "inet opened", "{out}");
            assert!(
                ["connected", "socket: Permission denied"].contains(&lines[1]),
                "agentd's socket is there: {out}"
            );

            // on-exec ran once for scan's event; its own run's event is of the same seed.
            let runs = settle(&r, &agentd).await;
            let fired: Vec<_> = runs.iter().filter(|x| x.routine == "on-exec").collect();
            assert_eq!(fired.len(), 1, "{runs:#?}");
            assert_eq!(fired[0].status, "ok", "{fired:#?}");
            exec_event(&agentd, fired[0].id);
            agentd.wait_events("routine.loop.cut", 1).await;
            r.stop().await;
        },
    );
}

/// The osmoda-egress binary of this build (beside the test's `deps` directory): the relay
/// inside Ring 1 and the proxy outside. `cargo test --workspace` builds it.
fn egress_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("osmoda-egress");
    bin.is_file().then_some(bin)
}

#[test]
fn a_ring1_routine_reaches_only_its_capabilitys_name() {
    let Some(bin) = egress_bin() else {
        println!("skipped: a_ring1_routine_reaches_only_its_capabilitys_name needs the osmoda-egress binary (cargo build -p osmoda-egress)");
        return;
    };
    in_netns(
        "a_ring1_routine_reaches_only_its_capabilitys_name",
        move || async move {
            let dir = scratch();
            let mut z: dns::Zone = HashMap::new();
            z.insert(
                "api.allowed.test".into(),
                vec![dns::Rec::Ip("127.0.0.2".parse().unwrap())],
            );
            z.insert(
                "other.allowed.test".into(),
                vec![dns::Rec::Ip("127.0.0.3".parse().unwrap())],
            );
            let ns = dns::serve(z).await;
            let certs = dir.path().join("certs");
            std::fs::create_dir(&certs).unwrap();
            std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o755)).unwrap();
            procs::cert(&certs, "api.allowed.test");
            std::fs::set_permissions(
                certs.join("cert.pem"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            let _api = procs::Kill(procs::tls_server(&certs, "127.0.0.2:8443"));
            let _other = procs::Kill(procs::tls_server(&certs, "127.0.0.3:8443"));
            // Two capabilities; the routine names one. The certificate's directory is bound
            // read-only by each (a ring root holds nothing of the host's /var/tmp).
            let cap = |name: &str| json!({ "domains": [name], "ports": [8443], "read_only_paths": [certs] });
            let egress = json!({
                "listen": "127.0.0.1:19999",
                "capabilities": { "api": cap("api.allowed.test"), "other": cap("other.allowed.test") },
                "public_key_file": dir.path().join("pub/public.key"),
                "revocation_file": dir.path().join("pub/revoked"),
                "allow_ranges": ["127.0.0.2/32", "127.0.0.3/32"],
                "nameservers": [ns.to_string()],
            });
            let cfg = dir.path().join("egress.json");
            std::fs::write(&cfg, serde_json::to_vec(&egress).unwrap()).unwrap();
            let settings = agentd::Settings {
                egress_config: Some(cfg.clone()),
                egress_proxy_socket: Some(dir.path().join("egress-proxy.sock")),
                egress_bin: Some(bin.clone()),
                ..Default::default()
            };
            let agentd = Agentd::start_with(dir.path(), None, settings);
            let _proxy = procs::daemon(&bin.display().to_string(), dir.path(), &cfg);
            let curl = |url: &str| {
                format!(
                "curl -sS --max-time 20 --cacert {} {url} >/dev/null 2>/tmp/e; echo \"$? $(head -n 1 /tmp/e)\"",
                certs.join("cert.pem").display()
            )
            };
            let script = [
                curl("https://api.allowed.test:8443/"),
                curl("https://other.allowed.test:8443/"),
            ]
            .join("; ");
            write_config_full(
                dir.path(),
                json!({
                    "egress_capabilities": ["api", "other"],
                    "routines": {
                        "fetch": manual(sh(&script, json!({ "sandbox": "ring1", "capabilities": ["api"] }))),
                    },
                }),
            );
            let r = Routines::start(options(dir.path(), &agentd.socket)).await;
            let fetch = run(&r, "fetch").await;
            let out = fetch.output.clone().unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(fetch.status, "ok", "{fetch:?}");
            assert_eq!(lines.len(), 2, "{out}");
            assert!(lines[0].starts_with("0 "), "the capability's name: {out}");
            assert!(lines[1].contains("403"), "another name egress knows: {out}");
            let (_, p) = exec_event(&agentd, fetch.id);
            assert_eq!(p["ring"], 1, "{p}");
            let granted: Vec<&str> = p["capabilities"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(granted, ["api"], "{p}");
            assert!(
                !p.to_string().contains("osm1."),
                "no token in the ledger: {p}"
            );
            r.stop().await;
        },
    );
}

/// A routine agentd's `/sandbox/exec` would refuse never loads: each bad declaration fails
/// `check-config` and `/routine/add` (400) with a message naming the option and what to do,
/// and nothing runs or is committed; the good siblings pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ring_declarations_are_refused_at_check_config_and_add() {
    let dir = scratch();
    let cmd = |extra: Value| {
        let mut a = json!({ "type": "command", "command": ["true"], "timeout_secs": 30 });
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    let bad = [
        (json!({ "sandbox": "ring3" }), "unknown variant `ring3`"),
        (
            json!({ "sandbox": "ring1" }),
            "action.capabilities is empty",
        ),
        (
            json!({ "sandbox": "ring1", "capabilities": ["npm"] }),
            "\"npm\" is not declared in services.osmoda.egress.capabilities (declared: web)",
        ),
        (
            json!({ "sandbox": "ring2", "capabilities": ["web"] }),
            "a ring2 sandbox has no network",
        ),
        (json!({ "capabilities": ["web"] }), "only a ring1 sandbox"),
        (
            json!({ "sandbox": "ring2", "user": "nobody" }),
            "runs its command as nobody",
        ),
        (
            json!({ "sandbox": "ring2", "timeout_secs": 601 }),
            "at most 600 seconds",
        ),
        (
            json!({ "sandbox": "ring1", "capabilities": ["web"], "memory_mb": 8 }),
            "memory_mb is 8",
        ),
        (
            json!({ "max_tasks": 64 }),
            "limits apply to a ring1 or ring2 sandbox",
        ),
    ];
    let file = dir.path().join("check.json");
    for (extra, want) in &bad {
        let cfg = json!({ "egress_capabilities": ["web"],
                          "routines": { "r": manual(cmd(extra.clone())) } });
        std::fs::write(&file, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(want),
            "{extra}: {text}"
        );
    }
    let good = json!({ "egress_capabilities": ["web"], "routines": {
        "a": manual(cmd(json!({ "sandbox": "ring1", "capabilities": ["web"], "memory_mb": 64, "max_tasks": 16 }))),
        "b": manual(cmd(json!({ "sandbox": "ring2" }))),
        "c": manual(cmd(json!({ "sandbox": "boundary" }))),
    } });
    std::fs::write(&file, serde_json::to_vec(&good).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let agentd = Agentd::start(dir.path(), None);
    write_config_full(
        dir.path(),
        json!({ "egress_capabilities": ["web"], "routines": {} }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let before = agentd.events("").len();
    for (extra, want) in &bad {
        let (s, v) = r
            .post(
                "/routine/add",
                json!({ "name": "r", "trigger": { "type": "interval", "seconds": 60 },
                        "action": cmd(extra.clone()) }),
            )
            .await;
        let text = v.to_string();
        assert_eq!(s, 400, "{extra}: {text}");
        assert!(text.contains(&want.replace('"', "\\\"")), "{extra}: {text}");
    }
    assert_eq!(
        agentd.events("").len(),
        before,
        "nothing recorded or committed"
    );
    r.stop().await;
}
