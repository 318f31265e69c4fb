//! Each rule on its effect, and not on harmless changes.

use super::*;

const U: &str = "__osmoda";

/// The kinds the rules report for `before` → `after` (edits; critical: openssh).
fn kinds(before: Value, after: Value) -> Vec<&'static str> {
    kinds_with(before, after, &[], "package.remove_critical")
}

fn kinds_with(
    before: Value,
    after: Value,
    unevaluable: &[(String, Value, Value)],
    package_kind: &'static str,
) -> Vec<&'static str> {
    let critical = vec!["openssh".to_string()];
    let ctx = Ctx {
        before: &before,
        after: &after,
        unevaluable,
        critical: &critical,
        forced_before: &Default::default(),
        forced_after: &Default::default(),
        package_kind,
        opaque: &[],
    };
    let mut k: Vec<&str> = findings(&ctx).iter().map(|f| f.kind).collect();
    k.dedup();
    k
}

fn undecidable() -> Value {
    json!({ U: "undecidable" })
}

fn ssh(extra: Value) -> Value {
    let mut s = json!({"services": {"openssh": {"enable": true}}, "networking": {"firewall": {"allowedTCPPorts": [22]}}});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    s
}

#[test]
fn every_rule_fires_on_its_effect_and_not_on_harmless_changes() {
    let alice = json!({"isNormalUser": true, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h"});
    let users = |a: Value| json!({"users": {"users": {"alice": a}}});
    let osm = |k: &str, v: Value| json!({"services": {"osmoda": {k: v}}});
    for (before, after, expected) in [
        (
            json!({"services": {"nginx": {"enable": true}}}),
            json!({"services": {}}),
            vec!["service.remove"],
        ),
        (
            json!({"services": {"nginx": {"enable": true}}}),
            json!({"services": {"nginx": {}}}),
            vec!["service.remove"],
        ),
        (
            json!({"services": {"nginx": {"enable": false}}}),
            json!({}),
            vec![],
        ),
        (
            json!({"services": {"nginx": {"enable": true}}}),
            json!({"services": {"nginx": {"enable": false}}}),
            vec!["service.disable"],
        ),
        (
            json!({"services": {"nginx": {"enable": true}}}),
            json!({"services": {"nginx": {"enable": undecidable()}}}),
            vec!["service.disable"],
        ),
        (
            json!({"services": {"nginx": {"enable": false}}}),
            json!({"services": {"nginx": {"enable": true}}}),
            vec![],
        ),
        (
            json!({}),
            json!({"systemd": {"services": {"sshd": {"enable": false}}}}),
            vec!["service.disable"],
        ),
        (
            json!({"systemd": {"services": {"app": {"script": "x"}}}}),
            json!({}),
            vec!["service.remove"],
        ),
        (
            json!({}),
            osm("watch", json!({"enable": false})),
            vec!["service.disable"],
        ),
        (
            osm("egress", json!({"capabilities": {"web": {}}})),
            osm("egress", json!({})),
            vec!["capability.remove"],
        ),
        (
            users(alice.clone()),
            json!({"users": {"users": {}}}),
            vec!["user.remove"],
        ),
        (
            users(alice.clone()),
            json!({"users": {"users": undecidable()}}),
            vec!["user.remove"],
        ),
        (
            users(alice.clone()),
            users(
                json!({"isNormalUser": false, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h"}),
            ),
            vec!["user.demote"],
        ),
        (
            users(alice.clone()),
            users(
                json!({"isNormalUser": true, "extraGroups": [], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h"}),
            ),
            vec!["user.demote"],
        ),
        (
            users(alice.clone()),
            users(
                json!({"isNormalUser": true, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k2"]}}, "hashedPassword": "h"}),
            ),
            vec!["user.credentials"],
        ),
        (
            users(alice.clone()),
            users(
                json!({"isNormalUser": true, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h2"}),
            ),
            vec!["user.credentials"],
        ),
        (
            users(alice.clone()),
            users(
                json!({"isNormalUser": true, "extraGroups": ["wheel", "docker"], "openssh": {"authorizedKeys": {"keys": ["k1", "k2"]}}, "hashedPassword": "h"}),
            ),
            vec![],
        ),
        (
            ssh(json!({})),
            ssh(json!({"services": {"openssh": {"enable": true, "ports": [2222]}}})),
            vec!["ssh.access"],
        ),
        (
            ssh(json!({})),
            ssh(json!({"services": {"openssh": {"enable": true, "ports": [22, 2222]}}})),
            vec![],
        ),
        (
            ssh(json!({})),
            ssh(
                json!({"services": {"openssh": {"enable": true, "settings": {"PermitRootLogin": "no"}}}}),
            ),
            vec!["ssh.access"],
        ),
        (
            ssh(json!({})),
            ssh(
                json!({"services": {"openssh": {"enable": true, "settings": {"PermitRootLogin": "yes"}}}}),
            ),
            vec![],
        ),
        (
            ssh(json!({})),
            ssh(
                json!({"services": {"openssh": {"enable": true, "settings": {"PasswordAuthentication": false}}}}),
            ),
            vec!["ssh.access"],
        ),
        (
            ssh(json!({})),
            ssh(
                json!({"services": {"openssh": {"enable": true, "settings": {"X11Forwarding": false}}}}),
            ),
            vec![],
        ),
        // 22 stays open through openFirewall (default true) ...
        (
            ssh(json!({})),
            ssh(json!({"networking": {"firewall": {"allowedTCPPorts": []}}})),
            vec![],
        ),
        // ... unless that is off too.
        (
            ssh(json!({"services": {"openssh": {"enable": true, "openFirewall": false}}})),
            ssh(
                json!({"services": {"openssh": {"enable": true, "openFirewall": false}}, "networking": {"firewall": {"allowedTCPPorts": [80]}}}),
            ),
            vec!["firewall.ssh"],
        ),
        (
            ssh(
                json!({"services": {"openssh": {"enable": true, "openFirewall": false}}, "networking": {"firewall": {"enable": false}}}),
            ),
            ssh(
                json!({"services": {"openssh": {"enable": true, "openFirewall": false}}, "networking": {"firewall": {"enable": true, "allowedTCPPortRanges": [{"from": 20, "to": 30}]}}}),
            ),
            vec![],
        ),
        (
            osm("keyd", json!({"policy": {"wallets": {"main": {}}}})),
            osm("keyd", json!({"policy": {"wallets": {}}})),
            vec!["wallet.delete"],
        ),
        (
            osm("mesh", json!({"peers": {"a": {}, "b": {}}})),
            osm("mesh", json!({"peers": {"a": {}}})),
            vec!["mesh.peer.remove"],
        ),
        (
            osm("mesh", json!({"peers": {"a": {}}})),
            osm("mesh", json!({"peers": undecidable()})),
            vec!["mesh.peer.remove"],
        ),
        (
            osm("mesh", json!({"peers": {"a": {}}})),
            osm("mesh", json!({"peers": {"a": {}, "b": {}}})),
            vec![],
        ),
        (
            json!({"environment": {"systemPackages": [{U: "pkg", "name": "openssh"}, "git"]}}),
            json!({"environment": {"systemPackages": ["git"]}}),
            vec!["package.remove_critical"],
        ),
        (
            json!({"environment": {"systemPackages": [{U: "pkg", "name": "openssh"}]}}),
            json!({"environment": {"systemPackages": [undecidable()]}}),
            vec!["package.remove_critical"],
        ),
        (
            json!({"environment": {"systemPackages": ["git"]}}),
            json!({"environment": {"systemPackages": []}}),
            vec![],
        ),
    ] {
        assert_eq!(
            kinds(before.clone(), after.clone()),
            expected,
            "{before} → {after}"
        );
    }
}

#[test]
fn switches_report_critical_packages_as_their_own_kind_and_unevaluable_modules_are_gated() {
    let b = json!({"environment": {"systemPackages": [{U: "pkg", "name": "openssh"}]}});
    let a = json!({});
    assert_eq!(
        kinds_with(b, a, &[], "switch.remove_critical"),
        vec!["switch.remove_critical"]
    );
    let f = vec![("hosts/web.nix".to_string(), json!("a"), json!("b"))];
    assert_eq!(
        kinds_with(json!({}), json!({}), &f, "package.remove_critical"),
        vec!["gate.undecidable"]
    );
}

#[test]
fn every_rule_in_the_table_has_a_distinct_kind() {
    let mut k: Vec<&str> = RULES.iter().map(|r| r.kind).collect();
    k.sort();
    k.dedup();
    assert_eq!(k.len(), RULES.len());
    for r in RULES {
        assert!(
            crate::gate::DEFAULT_REQUIRED.contains(&r.kind),
            "{} is gated by default",
            r.kind
        );
    }
}

#[test]
fn lockouts_the_first_table_missed_and_their_harmless_siblings() {
    let sshd = |extra: Value| {
        let mut o = json!({"enable": true});
        for (k, v) in extra.as_object().into_iter().flatten() {
            o[k] = v.clone();
        }
        ssh(json!({"services": {"openssh": o}}))
    };
    let alice = |extra: Value| {
        let mut a = json!({"isNormalUser": true, "extraGroups": ["wheel"]});
        for (k, v) in extra.as_object().into_iter().flatten() {
            a[k] = v.clone();
        }
        json!({"users": {"users": {"alice": a}}})
    };
    let with = |base: Value, extra: Value| {
        let mut b = base;
        for (k, v) in extra.as_object().into_iter().flatten() {
            b[k] = v.clone();
        }
        b
    };
    let pkg = |n: &str| json!({U: "pkg", "name": n});
    for (before, after, expected) in [
        // sshd: key logins, key files, extra configuration, package, units.
        (
            sshd(json!({})),
            sshd(json!({"settings": {"PubkeyAuthentication": false}})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"settings": {"PubkeyAuthentication": true}})),
            vec![],
        ),
        (
            sshd(json!({"authorizedKeysFiles": ["/etc/keys/%u"]})),
            sshd(json!({})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"authorizedKeysFiles": ["/etc/keys/%u"]})),
            vec![],
        ),
        (
            sshd(json!({})),
            sshd(json!({"authorizedKeysInHomedir": false})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"settings": {"AuthorizedKeysFile": "/none"}})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"extraConfig": "DenyUsers *\n"})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"extraConfig": "Match User alice\n  ForceCommand /bin/false"})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"extraConfig": "ClientAliveInterval 60\n# keep alive\n"})),
            vec![],
        ),
        (
            sshd(json!({"extraConfig": "denyusers bob"})),
            sshd(json!({"extraConfig": "  denyusers   bob  "})),
            vec![],
        ),
        (
            sshd(json!({})),
            sshd(json!({"extraConfig": undecidable()})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"settings": {"AuthenticationMethods": "publickey,password"}})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"settings": {"ClientAliveInterval": 30, "UseDns": false}})),
            vec![],
        ),
        (
            sshd(json!({})),
            sshd(json!({"package": pkg("dropbear")})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            sshd(json!({"startWhenNeeded": true})),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"systemd": {"services": {"sshd": {"serviceConfig": {"ExecStart": "/bin/true"}}}}}),
            ),
            vec!["code.root", "ssh.access"],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"systemd": {"services": {"sshd": {"wantedBy": []}}}}),
            ),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"systemd": {"sockets": {"sshd": {"listenStreams": ["2222"]}}}}),
            ),
            vec!["ssh.access"],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"systemd": {"services": {"sshd": {"enable": true}}}}),
            ),
            vec![],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"security": {"pam": {"services": {"sshd": {"unixAuth": false}}}}}),
            ),
            vec!["ssh.access"],
        ),
        // The firewall: custom rules, per-interface openings.
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"networking": {"firewall": {"allowedTCPPorts": [22], "extraCommands": "iptables -I INPUT -p tcp --dport 22 -j DROP"}}}),
            ),
            vec!["firewall.ssh"],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"networking": {"firewall": {"allowedTCPPorts": [22], "extraCommands": ""}}}),
            ),
            vec![],
        ),
        (
            sshd(json!({})),
            with(
                sshd(json!({})),
                json!({"networking": {"firewall": {"allowedTCPPorts": [22]}, "nftables": {"enable": true, "ruleset": "table inet f { }"}}}),
            ),
            vec!["firewall.ssh"],
        ),
        (
            sshd(json!({"openFirewall": false})),
            with(
                sshd(json!({"openFirewall": false})),
                json!({"networking": {"firewall": {"allowedTCPPorts": [], "interfaces": {"eth0": {"allowedTCPPorts": [22]}}}}}),
            ),
            vec![],
        ),
        (
            with(
                sshd(json!({"openFirewall": false})),
                json!({"networking": {"firewall": {"allowedTCPPorts": [], "interfaces": {"eth0": {"allowedTCPPorts": [22]}}}}}),
            ),
            with(
                sshd(json!({"openFirewall": false})),
                json!({"networking": {"firewall": {"allowedTCPPorts": [], "interfaces": {"eth0": {"allowedTCPPorts": []}}}}}),
            ),
            vec!["firewall.ssh"],
        ),
        // The machine's address.
        (
            json!({}),
            json!({"networking": {"useDHCP": false}}),
            vec!["ssh.access"],
        ),
        (
            json!({"networking": {"useDHCP": false}}),
            json!({"networking": {"useDHCP": true}}),
            vec![],
        ),
        (
            json!({"networking": {"networkmanager": {"enable": true}}}),
            json!({}),
            vec!["ssh.access"],
        ),
        (
            json!({"networking": {"useDHCP": false, "interfaces": {"eth0": {"ipv4": {"addresses": [{"address": "10.0.0.5", "prefixLength": 24}]}}}}}),
            json!({"networking": {"useDHCP": false}}),
            vec!["ssh.access"],
        ),
        (
            json!({"networking": {"interfaces": {"eth0": {"useDHCP": true}}}}),
            json!({"networking": {"interfaces": {"eth0": {"useDHCP": false}}}}),
            vec!["ssh.access"],
        ),
        (
            json!({"networking": {"interfaces": {"eth0": {"useDHCP": true}}}}),
            json!({"networking": {"interfaces": {"eth0": {"useDHCP": true, "mtu": 9000}, "eth1": {"useDHCP": true}}}}),
            vec![],
        ),
        (
            json!({"networking": {"defaultGateway": "10.0.0.1"}}),
            json!({"networking": {}}),
            vec!["ssh.access"],
        ),
        (
            json!({}),
            json!({"networking": {"hostName": "web1", "nameservers": ["1.1.1.1"]}}),
            vec![],
        ),
        // Accounts: shell, expiry, name, system user, home, uid, wheel members, mutableUsers.
        (
            alice(json!({})),
            alice(json!({"shell": "/run/current-system/sw/bin/nologin"})),
            vec!["user.demote"],
        ),
        (
            alice(json!({})),
            alice(json!({"shell": pkg("shadow")})),
            vec!["user.demote"],
        ),
        (
            alice(json!({})),
            alice(json!({"shell": undecidable()})),
            vec!["user.demote"],
        ),
        (
            alice(json!({"shell": pkg("bash")})),
            alice(json!({"shell": pkg("zsh")})),
            vec![],
        ),
        (
            alice(json!({})),
            alice(json!({"expires": "2020-01-01"})),
            vec!["user.demote"],
        ),
        (
            alice(json!({})),
            alice(json!({"isSystemUser": true})),
            vec!["user.demote"],
        ),
        (
            alice(json!({})),
            alice(json!({"name": "alicia"})),
            vec!["user.remove"],
        ),
        (alice(json!({})), alice(json!({"name": "alice"})), vec![]),
        (
            alice(json!({"home": "/home/alice"})),
            alice(json!({"home": "/srv/alice"})),
            vec!["user.credentials"],
        ),
        (
            alice(json!({"uid": 1000})),
            alice(json!({"uid": 1001})),
            vec!["user.credentials"],
        ),
        (
            alice(json!({})),
            alice(json!({"description": "Alice", "uid": 1000})),
            vec![],
        ),
        (
            json!({"users": {"groups": {"wheel": {"members": ["alice"]}}}}),
            json!({"users": {"groups": {"wheel": {"members": []}}}}),
            vec!["user.demote"],
        ),
        (
            json!({"users": {"groups": {"wheel": {"members": ["alice"]}}}}),
            json!({"users": {"groups": {"wheel": {"members": ["alice", "bob"]}}}}),
            vec![],
        ),
        (
            json!({}),
            json!({"users": {"mutableUsers": false}}),
            vec!["user.credentials"],
        ),
        // sudo, where someone is in wheel.
        (
            alice(json!({})),
            with(
                alice(json!({})),
                json!({"security": {"sudo": {"enable": false}}}),
            ),
            vec!["user.demote"],
        ),
        (
            alice(json!({})),
            with(
                alice(json!({})),
                json!({"security": {"sudo": {"wheelNeedsPassword": true}}}),
            ),
            vec![],
        ),
        (
            with(
                alice(json!({})),
                json!({"security": {"sudo": {"wheelNeedsPassword": false}}}),
            ),
            with(
                alice(json!({})),
                json!({"security": {"sudo": {"wheelNeedsPassword": true}}}),
            ),
            vec!["user.demote"],
        ),
        (
            alice(json!({})),
            with(
                alice(json!({})),
                json!({"security": {"sudo": {"extraConfig": "%wheel ALL=(ALL) !ALL"}}}),
            ),
            vec!["user.demote"],
        ),
        (
            json!({"users": {"users": {"svc": {"isSystemUser": true}}}}),
            json!({"users": {"users": {"svc": {"isSystemUser": true}}}, "security": {"sudo": {"enable": false}}}),
            vec![],
        ),
    ] {
        assert_eq!(
            kinds(before.clone(), after.clone()),
            expected,
            "{before} → {after}"
        );
    }
}

#[test]
fn weakening_the_ledgers_tamper_evidence_or_the_backups_needs_a_person() {
    let agentd = |v: Value| json!({"services": {"osmoda": {"agentd": v}}});
    let cp = |v: Value| agentd(json!({"ledger": {"checkpoint": v}}));
    let wit = |v: Value| agentd(json!({"ledger": {"witness": v}}));
    let backup = |v: Value| agentd(json!({"backup": v}));
    // `base` (a whole config) with `services.osmoda.mesh` = `m`.
    let mesh = |mut base: Value, m: Value| {
        base["services"]["osmoda"]["mesh"] = m;
        base
    };
    let weakens = vec!["audit.weaken"];
    for (before, after, expected) in [
        // Checkpoints off, however phrased (left out = on).
        (json!({}), cp(json!({"enable": false})), weakens.clone()),
        (cp(json!({"enable": true})), cp(json!({})), vec![]),
        (
            json!({}),
            cp(json!({"enable": undecidable()})),
            weakens.clone(),
        ),
        (
            cp(json!({"enable": false})),
            cp(json!({"enable": true})),
            vec![],
        ),
        // Cadence: rarer is weaker, more often is not (defaults 1000 events, 60 s).
        (
            json!({}),
            cp(json!({"everyEvents": 2147483647})),
            weakens.clone(),
        ),
        (json!({}), cp(json!({"everyEvents": 1000})), vec![]),
        (json!({}), cp(json!({"everyEvents": 10})), vec![]),
        (cp(json!({"intervalSecs": 10})), json!({}), weakens.clone()),
        (
            json!({}),
            cp(json!({"intervalSecs": undecidable()})),
            weakens.clone(),
        ),
        // Keys: any change (null and left out are one).
        (
            json!({}),
            cp(json!({"keyFile": "/tmp/agent-made.key"})),
            weakens.clone(),
        ),
        (cp(json!({"keyFile": null})), json!({}), vec![]),
        (
            json!({}),
            wit(json!({"keyFile": "/tmp/k"})),
            weakens.clone(),
        ),
        // Witnesses: one removed, its key replaced, all removed; one added is fine.
        (
            wit(json!({"peers": {"b": "k1", "c": "k2"}})),
            wit(json!({"peers": {"b": "k1"}})),
            weakens.clone(),
        ),
        (
            wit(json!({"peers": {"b": "k1"}})),
            wit(json!({"peers": {"b": "k9"}})),
            weakens.clone(),
        ),
        (
            wit(json!({"peers": {"b": "k1"}})),
            json!({}),
            weakens.clone(),
        ),
        (
            wit(json!({"peers": {"b": "k1"}})),
            wit(json!({"peers": undecidable()})),
            weakens.clone(),
        ),
        (
            wit(json!({"peers": {"b": "k1"}})),
            wit(
                json!({"peers": {"b": "k1", "c": "o.example/osmoda-witness+e8cef19c+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"}}),
            ),
            vec![],
        ),
        (
            wit(json!({"logs": ["a", "b"]})),
            wit(json!({"logs": ["a"]})),
            weakens.clone(),
        ),
        (
            wit(
                json!({"logs": ["beta/osmoda-ledger+cb9efd1a+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs"]}),
            ),
            wit(
                json!({"logs": ["beta/osmoda-ledger+cb9efd1a+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs", "o.example/osmoda-ledger+6698417f+AROY9ixtGkV8UbpqS189vS9p/KkyFiGNyJl+QWvRfZPK"]}),
            ),
            vec![],
        ),
        // Review 18-11 finding 2: adding a key agentd cannot use turns its witness off.
        (
            wit(
                json!({"logs": ["beta/osmoda-ledger+cb9efd1a+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs"]}),
            ),
            wit(
                json!({"logs": ["beta/osmoda-ledger+cb9efd1a+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs", "x+00000000+AAAA"]}),
            ),
            weakens.clone(),
        ),
        (
            wit(
                json!({"logs": ["beta/osmoda-ledger+cb9efd1a+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs"]}),
            ),
            wit(
                json!({"logs": ["beta/osmoda-ledger+cb9efd1a+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs", "o.example/osmoda-witness+e8cef19c+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"]}),
            ),
            weakens.clone(),
        ),
        (
            wit(json!({"peers": {"b": "k1"}})),
            wit(
                json!({"peers": {"b": "k1", "c": "o.example/osmoda-ledger+6698417f+AROY9ixtGkV8UbpqS189vS9p/KkyFiGNyJl+QWvRfZPK"}}),
            ),
            weakens.clone(),
        ),
        // Options outside `agentd` that reach it: the state dir always; the mesh switched
        // off or its socket moved while witnesses are configured (the mesh is off by default).
        (
            json!({}),
            json!({"services": {"osmoda": {"stateDir": "/var/lib/osmoda2"}}}),
            weakens.clone(),
        ),
        (
            json!({"services": {"osmoda": {"stateDir": "/var/lib/osmoda"}}}),
            json!({"services": {"osmoda": {"stateDir": undecidable()}}}),
            weakens.clone(),
        ),
        // (A daemon switched off is also `service.disable`, which a machine may not require
        // a person for; with witnesses it is the tamper evidence weakened as well.)
        (
            mesh(wit(json!({"peers": {"b": "k1"}})), json!({"enable": true})),
            mesh(wit(json!({"peers": {"b": "k1"}})), json!({"enable": false})),
            vec!["audit.weaken", "service.disable"],
        ),
        (
            mesh(wit(json!({"logs": ["a"]})), json!({"enable": true})),
            mesh(wit(json!({"logs": ["a"]})), json!({})),
            vec!["audit.weaken", "service.disable"],
        ),
        (
            mesh(wit(json!({"peers": {"b": "k1"}})), json!({"enable": true})),
            mesh(
                wit(json!({"peers": {"b": "k1"}})),
                json!({"enable": true, "socket": "/run/x.sock"}),
            ),
            weakens.clone(),
        ),
        (
            mesh(json!({}), json!({"enable": true})),
            mesh(json!({}), json!({"enable": false})),
            vec!["service.disable"],
        ),
        (
            mesh(wit(json!({"peers": {"b": "k1"}})), json!({"enable": false})),
            mesh(wit(json!({"peers": {"b": "k1"}})), json!({"enable": true})),
            vec![],
        ),
        // Retention: fewer archives (default 7; null = all), another directory.
        (json!({}), backup(json!({"keep": 1})), weakens.clone()),
        (json!({}), backup(json!({"keep": 7})), vec![]),
        (json!({}), backup(json!({"keep": 30})), vec![]),
        (
            backup(json!({"keep": null})),
            backup(json!({"keep": 100})),
            weakens.clone(),
        ),
        (
            backup(json!({"keep": 3})),
            backup(json!({"keep": null})),
            vec![],
        ),
        (
            json!({}),
            backup(json!({"keep": undecidable()})),
            weakens.clone(),
        ),
        (
            json!({}),
            backup(json!({"dir": "/tmp/agent-backups"})),
            weakens.clone(),
        ),
        (backup(json!({"dir": null})), json!({}), vec![]),
        // The whole block computed or forced into something the gate cannot read.
        (
            json!({}),
            agentd(json!({"ledger": undecidable()})),
            weakens.clone(),
        ),
        (
            json!({}),
            agentd(json!({"backup": undecidable()})),
            weakens.clone(),
        ),
        // Other agentd settings are not the audit.
        (json!({}), agentd(json!({"approvalTtlSecs": 60})), vec![]),
    ] {
        assert_eq!(
            kinds(before.clone(), after.clone()),
            expected,
            "{before} → {after}"
        );
    }
}

#[test]
fn loosening_what_needs_a_person_needs_a_person() {
    let chain = |v: Value| json!({"services": {"osmoda": {"keyd": {"policy": {"chains": {"ethereum": v}}}}}});
    let base = json!({"chainIds": [1], "perTxMax": "100", "dailyLimit": "1000", "approvalThreshold": "10", "recipientAllowlist": ["0xa"]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        chain(b)
    };
    let agentd = |k: &str, v: Value| json!({"services": {"osmoda": {"agentd": {k: v}}}});
    let wallet =
        |v: Value| json!({"services": {"osmoda": {"keyd": {"policy": {"wallets": {"main": v}}}}}});
    let weakens = vec!["policy.weaken"];
    for (before, after, expected) in [
        // A chain newly allowed; one dropped is narrower.
        (json!({}), chain(base.clone()), weakens.clone()),
        (chain(base.clone()), json!({}), vec![]),
        // Amounts: raised or removed loosens, lowered does not; strings compare as numbers.
        (
            chain(base.clone()),
            with("perTxMax", json!("101")),
            weakens.clone(),
        ),
        (chain(base.clone()), with("perTxMax", json!("99")), vec![]),
        (
            chain(base.clone()),
            with("dailyLimit", json!("9999")),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with("approvalThreshold", json!(null)),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with("approvalThreshold", json!("11")),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with("approvalThreshold", json!("9")),
            vec![],
        ),
        (
            with("approvalThreshold", json!(null)),
            chain(base.clone()),
            vec![],
        ),
        (
            chain(base.clone()),
            with("approvalThreshold", undecidable()),
            weakens.clone(),
        ),
        // Lists that allow: an entry added or the list removed loosens; one removed does not.
        (
            chain(base.clone()),
            with("recipientAllowlist", json!(["0xa", "0xb"])),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with("recipientAllowlist", json!(null)),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with("recipientAllowlist", json!([])),
            vec![],
        ),
        (
            chain(base.clone()),
            with("chainIds", json!([1, 10])),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with(
                "typedData",
                json!([{"chainId": 1, "verifyingContract": "0xc"}]),
            ),
            weakens.clone(),
        ),
        (
            chain(base.clone()),
            with(
                "tokens",
                json!({"0xt": {"perTxMax": "1", "dailyLimit": "1"}}),
            ),
            weakens.clone(),
        ),
        (
            with(
                "tokens",
                json!({"0xt": {"perTxMax": "1", "dailyLimit": "5"}}),
            ),
            with(
                "tokens",
                json!({"0xt": {"perTxMax": "1", "dailyLimit": "6"}}),
            ),
            weakens.clone(),
        ),
        (
            with(
                "tokens",
                json!({"0xt": {"perTxMax": "1", "dailyLimit": "5"}}),
            ),
            chain(base.clone()),
            vec![],
        ),
        // The whole policy undecidable.
        (
            chain(base.clone()),
            json!({"services": {"osmoda": {"keyd": {"policy": {"chains": undecidable()}}}}}),
            weakens.clone(),
        ),
        // Wallet bounds.
        (
            wallet(json!({"dailyLimit": "5"})),
            wallet(json!({"dailyLimit": "50"})),
            weakens.clone(),
        ),
        (
            wallet(json!({"dailyLimit": "5"})),
            wallet(json!({"dailyLimit": "1"})),
            vec![],
        ),
        // agentd: writable roots against the code default, the ticket lifetime against 900 s.
        (
            json!({}),
            agentd("writableRoots", json!(["/"])),
            weakens.clone(),
        ),
        (
            json!({}),
            agentd("writableRoots", json!(["/srv", "/home"])),
            vec![],
        ),
        (
            agentd("writableRoots", json!(["/srv"])),
            json!({}),
            weakens.clone(),
        ),
        (
            json!({}),
            agentd("approvalTtlSecs", json!(86400)),
            weakens.clone(),
        ),
        (json!({}), agentd("approvalTtlSecs", json!(60)), vec![]),
    ] {
        assert_eq!(
            kinds(before.clone(), after.clone()),
            expected,
            "{before} → {after}"
        );
    }
}
