//! The gate on whole tree states with the real evaluator: each bypass kind of the last review
//! (imports the gate could not read, users and `/etc` files turned off, sshd narrowed to
//! loopback, boot breakers) as its small case plus siblings, and the harmless edits beside them.

use super::*;

/// The starter tree of `generations/`, with an admin alice.
fn starter() -> Files {
    let mut f = Files::new();
    let cfg = include_str!("../../../../generations/configuration.nix").replace(
        "  networking.firewall = {",
        "  users.users.alice = {\n    isNormalUser = true;\n    extraGroups = [ \"wheel\" ];\n    openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAA alice\" ];\n  };\n\n  networking.firewall = {",
    );
    f.insert("configuration.nix".into(), cfg);
    f.insert(
        "osmoda.nix".into(),
        include_str!("../../../../generations/osmoda.nix").into(),
    );
    f
}

/// `starter()` with `from` replaced by `to` in configuration.nix.
fn edited(from: &str, to: &str) -> Files {
    let mut f = starter();
    let cfg = f.get_mut(Path::new("configuration.nix")).expect("cfg");
    assert!(cfg.contains(from), "{from:?}");
    *cfg = cfg.replacen(from, to, 1);
    f
}

/// Insert `line` after the opening of configuration.nix's body.
fn with_line(line: &str) -> Files {
    edited(
        "  networking.hostName = \"osmoda\";",
        &format!("  networking.hostName = \"osmoda\";\n  {line}"),
    )
}

fn kinds(before: &Files, after: &Files) -> Vec<&'static str> {
    let e = judge(before, after, &[], Mutation::Edit).expect("judge");
    let mut k: Vec<&str> = e.findings.iter().map(|f| f.kind).collect();
    k.dedup();
    k
}

fn nix() -> bool {
    let ok = osmoda_generations::validate::find_nix_instantiate().is_some();
    if !ok {
        eprintln!("skipped: nix-instantiate not found");
    }
    ok
}

/// `(case, line added to configuration.nix, a kind the effect must have)`.
fn check_gated(cases: &[(&str, &str, &str)]) {
    let before = starter();
    for (name, line, kind) in cases {
        let k = kinds(&before, &with_line(line));
        assert!(
            k.contains(kind),
            "{name}: `{line}` gave {k:?}, wanted {kind}"
        );
    }
}

fn check_harmless(cases: &[(&str, &str)]) {
    let before = starter();
    for (name, line) in cases {
        let k = kinds(&before, &with_line(line));
        assert!(k.is_empty(), "{name}: `{line}` is harmless but gave {k:?}");
    }
}

/// configuration.nix with its `imports` list replaced by `list`.
fn with_imports(list: &str) -> Files {
    edited("imports = [ ./osmoda.nix ];", &format!("imports = {list};"))
}

#[test]
fn imports_the_gate_cannot_read_are_undecidable_and_inline_modules_are_judged() {
    if !nix() {
        return;
    }
    let before = starter();
    for (name, list, kind) in [
        (
            "inline module disables sshd",
            "[ ./osmoda.nix { services.openssh.enable = lib.mkForce false; } ]",
            "service.disable",
        ),
        (
            "inline function module",
            "[ ./osmoda.nix ({ lib, ... }: { services.openssh.enable = lib.mkForce false; }) ]",
            "service.disable",
        ),
        (
            "inline module strips alice",
            "[ ./osmoda.nix { users.users.alice.extraGroups = lib.mkForce [ ]; } ]",
            "user.demote",
        ),
        (
            "nested inline module",
            "[ ./osmoda.nix { imports = [ { services.openssh.enable = lib.mkForce false; } ]; } ]",
            "service.disable",
        ),
        (
            "inline module in full form",
            "[ ./osmoda.nix { config.services.openssh.enable = lib.mkForce false; } ]",
            "service.disable",
        ),
        (
            "absolute path outside the tree",
            "[ ./osmoda.nix /tmp/evil.nix ]",
            "gate.undecidable",
        ),
        (
            "string path",
            "[ ./osmoda.nix \"/tmp/evil.nix\" ]",
            "gate.undecidable",
        ),
        (
            "path built by an expression",
            "[ ./osmoda.nix (/. + \"tmp/evil.nix\") ]",
            "gate.undecidable",
        ),
        (
            "missing file of the tree",
            "[ ./osmoda.nix ./missing.nix ]",
            "gate.undecidable",
        ),
        (
            "entry chosen by a stand-in",
            "[ ./osmoda.nix (if pkgs ? foo then ./osmoda.nix else /tmp/evil.nix) ]",
            "gate.undecidable",
        ),
        (
            "list chosen by a stand-in",
            "[ ./osmoda.nix ] ++ lib.optional (pkgs.foo.bar or false) /tmp/evil.nix",
            "gate.undecidable",
        ),
        (
            "entry that throws",
            "[ ./osmoda.nix (throw \"x\") ]",
            "gate.undecidable",
        ),
        (
            "a module of nixpkgs",
            "[ ./osmoda.nix (modulesPath + \"/profiles/minimal.nix\") ]",
            "gate.undecidable",
        ),
    ] {
        let k = kinds(&before, &with_imports(list));
        assert!(
            k.contains(&kind),
            "{name}: `{list}` gave {k:?}, wanted {kind}"
        );
    }
    // An import the gate cannot read, kept while something else changes, is not judged again;
    // taking it out (its definitions go away unseen) is.
    let with = with_imports("[ ./osmoda.nix /tmp/evil.nix ]");
    let mut other = with.clone();
    let cfg = other.get_mut(Path::new("configuration.nix")).expect("cfg");
    *cfg = cfg.replacen("time.timeZone = \"UTC\"", "time.timeZone = \"CET\"", 1);
    assert_eq!(kinds(&with, &other), Vec::<&str>::new());
    assert_eq!(kinds(&with, &before), ["gate.undecidable"]);
    for (name, list) in [
        (
            "inline module adds a service",
            "[ ./osmoda.nix { services.nginx.enable = true; } ]",
        ),
        (
            "inline function module adds a user",
            "[ ./osmoda.nix ({ ... }: { users.users.bob.isNormalUser = true; }) ]",
        ),
        ("the same file twice", "[ ./osmoda.nix ./osmoda.nix ]"),
    ] {
        let k = kinds(&before, &with_imports(list));
        assert!(k.is_empty(), "{name}: `{list}` is harmless but gave {k:?}");
    }
}
