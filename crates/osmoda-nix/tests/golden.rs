//! Golden tests: realistic NixOS files, one edit each, output compared byte for byte with
//! `tests/golden/expected/<input>.<case>.nix` (or `.err` for a refusal). Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p osmoda-nix --test golden` and review the diff: the expected
//! files are the specification.

use std::path::{Path, PathBuf};
use std::process::Command;

use osmoda_nix::{edit, get, AttrPath, Op, Value};

/// (input file, case name, operation, path, value: JSON or `nix:` + raw expression).
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "stock",
        "set-new-service",
        "set",
        "services.osmoda.enable",
        "true",
    ),
    (
        "stock",
        "set-existing-string",
        "set",
        "networking.hostName",
        "\"osmoda-box\"",
    ),
    (
        "stock",
        "set-nested-user-attr",
        "set",
        "users.users.alice.description",
        "\"Alice A.\"",
    ),
    (
        "stock",
        "set-object",
        "set",
        "services.openssh",
        r#"{"enable": true, "settings": {"PermitRootLogin": "no"}}"#,
    ),
    (
        "stock",
        "append-import",
        "append",
        "imports",
        "nix:./osmoda.nix",
    ),
    ("stock", "unset-timezone", "unset", "time.timeZone", ""),
    (
        "stock",
        "append-with-list",
        "append",
        "environment.systemPackages",
        "nix:pkgs.htop",
    ),
    (
        "stock",
        "get-missing-mentions-imports",
        "get",
        "services.osmoda.enable",
        "",
    ),
    (
        "dotted",
        "set-sibling-dotted",
        "set",
        "services.nginx.statusPage",
        "true",
    ),
    (
        "dotted",
        "set-quoted-name",
        "set",
        "services.nginx.virtualHosts.\"example.org\".forceSSL",
        "true",
    ),
    (
        "dotted",
        "append-port",
        "append",
        "networking.firewall.allowedTCPPorts",
        "8080",
    ),
    (
        "dotted",
        "remove-port",
        "remove",
        "networking.firewall.allowedTCPPorts",
        "80",
    ),
    (
        "dotted",
        "set-raw",
        "set",
        "services.postgresql.enable",
        "nix:lib.mkForce true",
    ),
    ("dotted", "unset-spread-set", "unset", "services.nginx", ""),
    (
        "dotted",
        "set-watcher",
        "set",
        "services.osmoda.watch.watchers.db",
        r#"{"check": {"type": "tcp", "host": "127.0.0.1", "port": 5432}}"#,
    ),
    (
        "dotted",
        "get-watcher",
        "get",
        "services.osmoda.watch.watchers",
        "",
    ),
    (
        "nested",
        "set-deep-new",
        "set",
        "services.osmoda.agentd.approval.ttlSecs",
        "600",
    ),
    (
        "nested",
        "set-new-top",
        "set",
        "networking.hostName",
        "\"nest\"",
    ),
    (
        "nested",
        "unset-prunes",
        "unset",
        "services.osmoda.agentd.logLevel",
        "",
    ),
    (
        "nested",
        "append-key",
        "append",
        "users.users.alice.openssh.authorizedKeys.keys",
        "\"ssh-ed25519 AAAA bob\"",
    ),
    (
        "nested",
        "set-keyword-name",
        "set",
        "services.osmoda.mesh.peers.if",
        r#"{"endpoint": "10.0.0.2:18800"}"#,
    ),
    (
        "tabs",
        "set-into-one-line-set",
        "set",
        "services.osmoda.watch.enable",
        "false",
    ),
    (
        "tabs",
        "set-nested-tabs",
        "set",
        "networking.firewall.enable",
        "true",
    ),
    (
        "tabs",
        "set-object-tabs",
        "set",
        "networking.interfaces.eth0",
        r#"{"useDHCP": true}"#,
    ),
    (
        "tabs",
        "append-tabs",
        "append",
        "boot.kernelParams",
        "\"console=ttyS0\"",
    ),
    (
        "tabs",
        "replace-odd-spacing",
        "set",
        "networking.hostName",
        "\"t2\"",
    ),
    (
        "comments",
        "set-into-empty-set",
        "set",
        "services.osmoda.watch.watchers.web",
        r#"{"check": {"type": "http", "url": "http://127.0.0.1/"}}"#,
    ),
    (
        "comments",
        "append-commented-list",
        "append",
        "networking.firewall.allowedTCPPorts",
        "8443",
    ),
    (
        "comments",
        "remove-commented-item",
        "remove",
        "networking.firewall.allowedTCPPorts",
        "22",
    ),
    (
        "comments",
        "unset-keeps-comments",
        "unset",
        "networking.firewall.allowedTCPPorts",
        "",
    ),
    ("comments", "set-top", "set", "time.timeZone", "\"UTC\""),
    (
        "osmoda",
        "set-escaping",
        "set",
        "services.osmoda.agentd.banner",
        r#""say \"hi\" \\ ${not interpolated}""#,
    ),
    ("osmoda", "get-all", "get", "services.osmoda", ""),
    (
        "osmoda",
        "unset-watcher",
        "unset",
        "services.osmoda.watch.watchers.nginx",
        "",
    ),
    (
        "osmoda",
        "append-domain",
        "append",
        "services.osmoda.egress.allowedDomains",
        "\"pypi.org\"",
    ),
    (
        "osmoda",
        "set-routine",
        "set",
        "services.osmoda.routines.backup",
        r#"{"schedule": "daily", "command": ["restic", "backup", "/srv"]}"#,
    ),
    (
        "osmoda",
        "refuse-through-string",
        "set",
        "services.osmoda.motd.x",
        "1",
    ),
    ("letwith", "set-through-let-with", "set", "time.timeZone", "\"Europe/Berlin\""),
    ("letwith", "set-value-naming-let", "set", "users.users.alice.description", "\"Alice\""),
    ("letwith", "get-value-naming-let", "get", "users.users.alice.description", ""),
    ("letwith", "add-under-let-with", "set", "services.osmoda.enable", "true"),
    ("letwith", "append-to-let-variable", "append", "networking.firewall.allowedTCPPorts", "8080"),
    ("priority", "set-keeps-mkforce", "set", "hardware.pulseaudio.enable", "true"),
    ("priority", "set-keeps-mkdefault-list", "set", "services.openssh.ports", "[2222]"),
    ("priority", "set-keeps-mkoverride-parens", "set", "boot.loader.timeout", "-1"),
    ("priority", "set-negative-in-mkforce", "set", "networking.hostName", "nix:-1"),
    ("priority", "set-explicit-priority", "set", "hardware.pulseaudio.enable", "nix:lib.mkDefault true"),
    ("priority", "get-through-mkforce", "get", "hardware.pulseaudio.enable", ""),
    ("priority", "append-through-mkdefault", "append", "services.openssh.ports", "2222"),
    ("lists", "append-keeps-comment", "append", "networking.firewall.allowedTCPPorts", "9090"),
    ("lists", "append-with-pkgs", "append", "environment.systemPackages", "nix:htop"),
    ("lists", "remove-with-pkgs-qualified", "remove", "environment.systemPackages", "nix:pkgs.git"),
    ("lists", "remove-with-pkgs-bare", "remove", "environment.systemPackages", "nix:curl"),
    ("lists", "set-multiline-raw", "set", "services.nginx.virtualHosts.x", "nix:{\n  root = \"/srv\";\n  # served by nginx\n  locations.\"/\".index = \"index.html\";\n}"),
    ("lists", "set-raw-trailing-comment", "set", "services.nginx.enable", "nix:true # for the site"),
    ("crlf", "set-keeps-crlf", "set", "services.openssh.settings", "{\"PasswordAuthentication\": false}"),
    ("crlf", "unset-crlf-with-comment", "unset", "networking.hostName", ""),
    ("crlf", "set-new-beside-a-set", "set", "services.nginx.enable", "true"),
    ("crlf", "set-new-list-beside-a-set", "set", "services.nginx.ports", "[80, 443, 8080, 8443, 9000, 9001, 9002, 9003, 9004, 9005, 9006, 9007, 9008]"),
    ("bom", "set-keeps-bom", "set", "time.timeZone", "\"Europe/Berlin\""),
    ("recset", "refuse-rec-dependent", "set", "services.osmoda.watch.watchers.web-http.intervalSecs", "10"),
    ("recset", "set-rec-independent", "set", "services.osmoda.watch.watchers.db.intervalSecs", "10"),
    ("flake", "refuse-option-in-flake", "set", "services.osmoda.enable", "true"),
    ("flake", "set-flake-input-url", "set", "inputs.nixpkgs.url", "\"github:NixOS/nixpkgs/nixos-25.05\""),
    ("explicit", "set-under-explicit-config", "set", "time.timeZone", "\"Europe/Berlin\""),
    ("explicit", "unset-under-explicit-config", "unset", "time.timeZone", ""),
    ("forced", "set-inside-forced-set", "set", "services.nginx.enable", "false"),
    ("forced", "add-inside-forced-set", "set", "services.nginx.recommendedTlsSettings", "true"),
    ("forced", "unset-inside-forced-set", "unset", "services.nginx.recommendedProxySettings", ""),
    ("forced", "get-inside-forced-set", "get", "services.nginx.enable", ""),
    ("forced", "remove-takes-its-comment", "remove", "networking.firewall.allowedTCPPorts", "32400"),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn value(v: &str) -> Value {
    match v.strip_prefix("nix:") {
        Some(raw) => Value::Raw(raw.to_string()),
        None => {
            Value::Json(serde_json::from_str(v).unwrap_or_else(|e| panic!("bad JSON {v}: {e}")))
        }
    }
}

/// Runs one case: the edited file (or `get`'s JSON), or the error message.
fn run(
    src: &str,
    op: &str,
    path: &str,
    val: &str,
) -> (Result<String, String>, Option<std::ops::Range<usize>>) {
    let path: AttrPath = path
        .parse()
        .unwrap_or_else(|e| panic!("bad path {path}: {e}"));
    let op = match op {
        "get" => {
            let out = get(src, &path)
                .map(|v| format!("{:#}\n", v))
                .map_err(|e| e.to_string());
            return (out, None);
        }
        "set" => Op::Set(path, value(val)),
        "unset" => Op::Unset(path),
        "append" => Op::Append(path, value(val)),
        "remove" => Op::Remove(path, value(val)),
        other => panic!("unknown op {other}"),
    };
    match edit(src, &op) {
        Ok(e) => (Ok(e.text), Some(e.changed)),
        Err(e) => (Err(e.to_string()), None),
    }
}

/// Does Nix parse the file? A byte-order mark (which the editor keeps, and Nix 2.8 rejects) is
/// left out of this check.
fn nix_parses(file: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(file).ok()?;
    let out = Command::new("nix-instantiate")
        .arg("--parse")
        .arg("-E")
        .arg(text.trim_start_matches('\u{feff}'))
        .current_dir(file.parent()?)
        .output()
        .ok()?;
    Some(out.status.success())
}

#[test]
fn golden_edits() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = golden_dir();
    std::fs::create_dir_all(dir.join("expected")).expect("expected dir");
    let mut failures = Vec::new();
    let mut nix_checked = 0;
    for (input, name, op, path, val) in CASES {
        let src = std::fs::read_to_string(dir.join("input").join(format!("{input}.nix")))
            .expect("read input");
        let (out, changed) = run(&src, op, path, val);
        let (text, ext) = match &out {
            Ok(t) if *op == "get" => (t.clone(), "json"),
            Ok(t) => (t.clone(), "nix"),
            Err(e) => (format!("{e}\n"), "err"),
        };
        let expected = dir.join("expected").join(format!("{input}.{name}.{ext}"));
        if let Some(range) = changed {
            let tail = src.len() - range.end;
            assert_eq!(
                text[..range.start],
                src[..range.start],
                "{input}.{name}: prefix changed"
            );
            assert_eq!(
                text[text.len() - tail..],
                src[range.end..],
                "{input}.{name}: suffix changed"
            );
        }
        if update {
            for stale in ["nix", "err", "json"] {
                let _ = std::fs::remove_file(
                    dir.join("expected").join(format!("{input}.{name}.{stale}")),
                );
            }
            std::fs::write(&expected, &text).expect("write expected");
        }
        match std::fs::read_to_string(&expected) {
            Ok(want) if want == text => {}
            Ok(want) => failures.push(format!(
                "{input}.{name}:\n--- want ---\n{want}\n--- got ---\n{text}"
            )),
            Err(_) => failures.push(format!(
                "{input}.{name}: missing {} (run with UPDATE_GOLDEN=1)",
                expected.display()
            )),
        }
        if ext == "nix" {
            match nix_parses(&expected) {
                Some(true) => nix_checked += 1,
                Some(false) => failures.push(format!(
                    "{input}.{name}: nix-instantiate --parse rejects the output"
                )),
                None => {}
            }
        }
    }
    if nix_checked == 0 {
        println!("skipped: nix-instantiate not found; outputs were only checked with rnix");
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_expected_file_has_a_case() {
    let dir = golden_dir().join("expected");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let known = CASES
            .iter()
            .any(|(i, c, ..)| name.starts_with(&format!("{i}.{c}.")));
        assert!(known, "{name} has no case in CASES; delete it");
    }
}
