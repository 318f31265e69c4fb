//! Property test of the approval gate with the Nix evaluator as oracle: for random edits (JSON
//! values, raw Nix, unsets, on parents and leaves) of a fixture with sshd, two users and a
//! wallet, the gate's verdict equals the verdict computed from the before/after values of the
//! whole file as `nix-instantiate` evaluates it.

use std::path::PathBuf;
use std::process::Command;

use agentd::gate::{eval::Files, judge, Mutation};
use osmoda_nix::{AttrPath, Op, Value as NixValue};
use proptest::prelude::*;
use serde_json::{json, Value};

const FIXTURE: &str = r#"{ config, lib, pkgs, ... }:
{
  services.openssh = {
    enable = true;
    settings.PermitRootLogin = "prohibit-password";
  };
  networking.firewall.allowedTCPPorts = [ 22 ];
  users.users.alice = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [ "ka" ];
    hashedPassword = "h";
  };
  users.users.bob = {
    isNormalUser = true;
    openssh.authorizedKeys.keys = [ "kb" ];
  };
  services.osmoda.keyd.policy.wallets.main = { dailyLimit = "1000"; };
}
"#;

/// The whole file, evaluated: wrappers resolved by a few lines of Nix written for this test
/// (each path is defined once here, so priorities never compete), absent values as `null`.
const ORACLE: &str = r#"file:
let
  lib = rec {
    mkOverride = p: c: { _type = "override"; priority = p; content = c; };
    mkForce = mkOverride 50;
    mkDefault = mkOverride 1000;
    mkIf = c: x: { _type = "if"; condition = c; content = x; };
    mkMerge = cs: { _type = "merge"; contents = cs; };
  };
  strip = v:
    if builtins.isAttrs v then
      (if v ? _type then
        (if v._type == "if" then (if v.condition == true then strip v.content else null)
         else if v._type == "override" then strip v.content
         else if v._type == "merge" then builtins.foldl' (a: b: a // b) { } (map strip v.contents)
         else null)
       else builtins.mapAttrs (_: strip) v)
    else if builtins.isList v then map strip v
    else v;
in strip (import file { inherit lib; config = { }; pkgs = { }; })"#;

fn evaluate_whole(text: &str) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("configuration.nix");
    std::fs::write(&f, text).expect("write");
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E"])
        .arg(format!("({ORACLE}) {}", f.display()))
        .output()
        .expect("nix-instantiate");
    assert!(
        out.status.success(),
        "oracle: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(v, |cur, k| cur.get(k).unwrap_or(&Value::Null))
}

/// The verdict from evaluated values: does the machine lose sshd, a user's login or admin
/// rights, root's SSH access, the SSH port, or the wallet?
fn oracle_destructive(b: &Value, a: &Value) -> bool {
    let sshd = |t: &Value| get(t, &["services", "openssh", "enable"]) == &json!(true);
    let user = |t: &Value, u: &str| get(t, &["users", "users", u]).is_object();
    let list = |t: &Value, p: &[&str]| get(t, p).as_array().cloned();
    let lost_any = |old: Option<Vec<Value>>, new: Option<Vec<Value>>| {
        old.unwrap_or_default()
            .iter()
            .any(|x| !new.as_ref().is_some_and(|n| n.contains(x)))
    };
    if sshd(b) && !sshd(a) {
        return true;
    }
    if sshd(b) && sshd(a) {
        let rank = |t: &Value| match get(t, &["services", "openssh", "settings", "PermitRootLogin"])
        {
            Value::Null => 2,
            Value::String(s) if s == "yes" => 3,
            Value::String(s) if s == "prohibit-password" => 2,
            Value::String(s) if s == "no" => 0,
            _ => -1,
        };
        if rank(a) < rank(b) {
            return true;
        }
        let open = |t: &Value| {
            list(t, &["networking", "firewall", "allowedTCPPorts"])
                .is_some_and(|l| l.contains(&json!(22)))
                || get(t, &["services", "openssh", "openFirewall"]) != &json!(false)
        };
        if open(b) && !open(a) {
            return true;
        }
    }
    for u in ["alice", "bob"] {
        let p = |k: &'static str| -> Vec<&str> { vec!["users", "users", u, k] };
        if user(b, u) && !user(a, u) {
            return true;
        }
        if !user(a, u) {
            continue;
        }
        let normal = |t: &Value| get(t, &p("isNormalUser")) == &json!(true);
        let wheel =
            |t: &Value| list(t, &p("extraGroups")).is_some_and(|l| l.contains(&json!("wheel")));
        let keys = |t: &Value| {
            list(
                t,
                &["users", "users", u, "openssh", "authorizedKeys", "keys"],
            )
        };
        let hash = |t: &Value| get(t, &p("hashedPassword")).clone();
        if (normal(b) && !normal(a))
            || (wheel(b) && !wheel(a))
            || lost_any(keys(b), keys(a))
            || (!hash(b).is_null() && hash(b) != hash(a))
        {
            return true;
        }
    }
    let wallet = |t: &Value| {
        !get(
            t,
            &["services", "osmoda", "keyd", "policy", "wallets", "main"],
        )
        .is_null()
    };
    if wallet(b) && !wallet(a) {
        return true;
    }
    // policy.weaken: the wallet's daily limit raised, removed, or no longer a number.
    let limit = |t: &Value| {
        get(
            t,
            &[
                "services",
                "osmoda",
                "keyd",
                "policy",
                "wallets",
                "main",
                "dailyLimit",
            ],
        )
        .clone()
    };
    let amount = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<u128>().ok())
            .or(v.as_u64().map(u128::from))
    };
    // An empty wallet entry does not evaluate (the module declares `dailyLimit` without a
    // default), so it reaches no machine; the gate takes `{}` as absent and leaves it to
    // wallet.delete, which sees the name still there.
    let empty = |t: &Value| {
        get(
            t,
            &["services", "osmoda", "keyd", "policy", "wallets", "main"],
        )
        .as_object()
        .is_some_and(serde_json::Map::is_empty)
    };
    if wallet(b) && wallet(a) && !empty(a) && limit(b) != limit(a) {
        return !matches!((amount(&limit(b)), amount(&limit(a))), (Some(was), Some(now)) if now <= was);
    }
    false
}

fn paths() -> Vec<&'static str> {
    vec![
        "services.openssh.enable",
        "services.openssh",
        "services",
        "services.openssh.settings.PermitRootLogin",
        "networking.firewall.allowedTCPPorts",
        "networking.firewall",
        "services.nginx.enable",
        "users.users",
        "users.users.alice",
        "users.users.alice.isNormalUser",
        "users.users.alice.extraGroups",
        "users.users.alice.openssh.authorizedKeys.keys",
        "users.users.alice.hashedPassword",
        "users.users.bob",
        "users.users.bob.isNormalUser",
        "users.users.carol",
        "services.osmoda.keyd.policy.wallets",
        "services.osmoda.keyd.policy.wallets.main",
        "services.osmoda.keyd.policy.wallets.main.dailyLimit",
    ]
}

fn values() -> Vec<NixValue> {
    let j = |v: Value| NixValue::Json(v);
    let n = |s: &str| NixValue::Raw(s.to_string());
    vec![
        j(json!(true)),
        j(json!(false)),
        j(json!({})),
        j(json!([])),
        j(json!(["wheel"])),
        j(json!(["ka", "kc"])),
        j(json!([22, 80])),
        j(json!("no")),
        j(json!("yes")),
        j(json!("h2")),
        j(json!({"enable": true})),
        j(json!({"isNormalUser": true, "extraGroups": ["wheel"]})),
        n("!true"),
        n("!false"),
        n("lib.mkForce false"),
        n("lib.mkForce true"),
        n("lib.mkDefault false"),
        n("lib.mkIf false { }"),
        n("lib.mkIf true { isNormalUser = true; }"),
        n("1 == 1"),
        n("[ ]"),
        n("{ }"),
        n("lib.mkMerge [ { } ]"),
    ]
}

fn files(text: &str) -> Files {
    let mut f = Files::new();
    f.insert(PathBuf::from("configuration.nix"), text.to_string());
    f
}

proptest! {
    // Each case runs the evaluator four times; 32 cases keep this around 10 s on 2 cores.
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_gate_agrees_with_the_evaluated_whole_file(
        path in prop::sample::select(paths()),
        value in prop::sample::select(values()),
        unset in prop::bool::weighted(0.25),
    ) {
        let p: AttrPath = path.parse().expect("path");
        let op = if unset { Op::Unset(p) } else { Op::Set(p, value.clone()) };
        // Edits the editor refuses (e.g. unsetting what is not there) are not changes.
        let Ok(edit) = osmoda_nix::edit(FIXTURE, &op) else { return Ok(()) };
        let effect = judge(&files(FIXTURE), &files(&edit.text), &[], Mutation::Edit).expect("gate");
        let before = evaluate_whole(FIXTURE);
        let after = evaluate_whole(&edit.text);
        let expected = oracle_destructive(&before, &after);
        prop_assert_eq!(
            !effect.findings.is_empty(),
            expected,
            "{:?}: gate {:?}\nbefore {}\nafter {}",
            op, effect.findings, before, after
        );
    }
}
