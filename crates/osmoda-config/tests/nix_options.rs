//! No dead options: every option modules/osmoda.nix declares (found with rnix) is either
//! read by the module's `config` or changes a file lib renders; the `full` fixture sets
//! only declared options.

mod common;

use anyhow::{Context, Result};
use common::options::{extract, OptionDecl};

fn module() -> Result<common::options::Module> {
    let path = common::repo_root().join("modules/osmoda.nix");
    extract(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
}

#[test]
fn extraction_finds_nested_submodule_and_freeform_options() -> Result<()> {
    let m = module()?;
    let all: Vec<String> = m.options.iter().map(OptionDecl::dotted).collect();
    for expected in [
        "enable",
        "agentd.package",
        "agentd.approvalTtlSecs",
        "watch.watchers.<name>.check.expectStatus",
        "watch.safeSwitch.healthChecks.*.minFreePercent",
        "routines.enable",
        "routines.<name>.trigger.secretFile",
        "routines.<name>.action.body",
        "keyd.policy.chains.<name>.recipientAllowlist",
        "mesh.peers.<name>.publicKeys.mlKem768",
        "egress.capabilities.<name>.ports",
        "gateway.channels.telegram.botTokenFile",
    ] {
        assert!(
            all.iter().any(|o| o == expected),
            "option {expected} not extracted; got {all:#?}"
        );
    }
    assert!(all.len() > 90, "only {} options extracted", all.len());
    Ok(())
}

#[test]
fn every_option_is_rendered_or_used_in_config() -> Result<()> {
    if !common::nix_available("every_option_is_rendered_or_used_in_config") {
        return Ok(());
    }
    let m = module()?;
    let root = common::repo_root();
    let fixture = root.join("tests/nix/fixtures/full.nix");
    // Names at a `<name>` position that are options themselves (routines.enable, ...).
    let patterns: Vec<serde_json::Value> = m
        .options
        .iter()
        .map(|o| {
            let mut exclude = Vec::new();
            if let Some(i) = o.path.iter().position(|s| s == "<name>") {
                for other in &m.options {
                    if other.path.len() > i
                        && other.path[..i] == o.path[..i]
                        && other.path[i] != "<name>"
                    {
                        exclude.push(other.path[i].clone());
                    }
                }
            }
            serde_json::json!({ "pattern": o.path, "exclude": exclude })
        })
        .collect();
    let out = common::nix_eval_json(
        "{ repo, fixture, patternsJson }: import (/. + repo + \"/tests/nix/mutate.nix\") \
         { repo = /. + repo; fixture = /. + fixture; inherit patternsJson; }",
        &[
            ("repo", &root.to_string_lossy()),
            ("fixture", &fixture.to_string_lossy()),
            ("patternsJson", &serde_json::to_string(&patterns)?),
        ],
    )?;
    let probes = out["probes"].as_array().context("probes")?;
    assert_eq!(probes.len(), m.options.len());

    let mut dead = Vec::new();
    let mut unset = Vec::new();
    let (mut rendered, mut config_only) = (0, 0);
    for (opt, probe) in m.options.iter().zip(probes) {
        let instances = probe["instances"].as_u64().unwrap_or(0);
        let changed = probe["changed"].as_bool().unwrap_or(false);
        if changed {
            rendered += 1;
        } else if m.used_in_config(opt) {
            config_only += 1;
        } else if instances == 0 {
            unset.push(opt.dotted());
        } else {
            dead.push(opt.dotted());
        }
    }
    assert!(
        dead.is_empty(),
        "options that change no rendered file and are not read by `config`: {dead:#?}"
    );
    assert!(
        unset.is_empty(),
        "options neither read by `config` nor set in tests/nix/fixtures/full.nix (set them there): {unset:#?}"
    );
    eprintln!("{rendered} options rendered by lib, {config_only} read only by the module's config");
    assert!(
        rendered > 60,
        "only {rendered} options change a rendered file"
    );

    // The fixture must not set anything the module does not declare (a typo would make
    // the coverage above meaningless).
    let leaves = out["leaves"].as_array().context("leaves")?;
    let mut undeclared = Vec::new();
    for leaf in leaves {
        let leaf: Vec<String> = serde_json::from_value(leaf.clone())?;
        let declared = m.options.iter().any(|o| {
            o.path.len() <= leaf.len()
                && o.path.iter().zip(&leaf).all(|(p, l)| p == l || p == "<name>" || p == "*")
                // `<name>` must not swallow a declared sibling such as routines.enable.
                && !(o.path.first().is_some_and(|p| p == "routines") && o.path.get(1).is_some_and(|p| p == "<name>")
                    && ["enable", "package", "socket"].contains(&leaf.get(1).map(String::as_str).unwrap_or("")))
        });
        if !declared {
            undeclared.push(leaf.join("."));
        }
    }
    assert!(
        undeclared.is_empty(),
        "full.nix sets undeclared options: {undeclared:#?}"
    );
    Ok(())
}

#[test]
fn a_dead_option_would_be_caught() -> Result<()> {
    if !common::nix_available("a_dead_option_would_be_caught") {
        return Ok(());
    }
    // A module declaring an option that neither lib renders nor config reads.
    let text = std::fs::read_to_string(common::repo_root().join("modules/osmoda.nix"))?.replacen(
        "    stateDir = mkOption {",
        "    unusedKnob = mkOption { type = types.int; default = 1; description = \"nothing\"; };\n    stateDir = mkOption {",
        1,
    );
    let m = extract(&text)?;
    let knob = m
        .options
        .iter()
        .find(|o| o.dotted() == "unusedKnob")
        .context("injected option not extracted")?;
    assert!(!m.used_in_config(knob));
    let used = m
        .options
        .iter()
        .find(|o| o.dotted() == "agentd.package")
        .context("agentd.package")?;
    assert!(m.used_in_config(used));
    Ok(())
}

/// `*File` options that name no secret, or a secret kept out of sandboxes by its own rule.
const NOT_DAEMON_SECRETS: &[(&str, &str)] = &[
    ("egress.publicKeyFile", "a public key"),
    ("egress.revocationFile", "revoked token ids"),
    (
        "routines.<name>.trigger.secretFile",
        "a routine's own webhook secret: routines.json carries it in the routine, and binds.rs refuses binds over every routine's secretFile",
    ),
];

#[test]
fn every_secret_file_option_is_in_daemon_secrets() -> Result<()> {
    if !common::nix_available("every_secret_file_option_is_in_daemon_secrets") {
        return Ok(());
    }
    let m = module()?;
    let secret_like = |o: &OptionDecl| {
        let last = o
            .path
            .last()
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        last.ends_with("file") || last.contains("secret") || last.contains("password")
    };
    let expected: std::collections::BTreeSet<String> = m
        .options
        .iter()
        .filter(|o| secret_like(o))
        .map(OptionDecl::dotted)
        .filter(|o| !NOT_DAEMON_SECRETS.iter().any(|(n, _)| n == o))
        .collect();
    for (n, _) in NOT_DAEMON_SECRETS {
        assert!(
            m.options.iter().any(|o| &o.dotted() == n),
            "{n} is no longer an option: drop it from NOT_DAEMON_SECRETS"
        );
    }
    // The full fixture sets every one of them; lib must name each in routines.json.
    let out = common::render_fixture(&common::repo_root().join("tests/nix/fixtures/full.nix"))?;
    let rendered: std::collections::BTreeSet<String> = out["daemons"]["routines"]["daemon_secrets"]
        .as_object()
        .context("routines.json has daemon_secrets")?
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        rendered, expected,
        "every secret file option of modules/osmoda.nix (set in tests/nix/fixtures/full.nix) must be in lib's daemon_secrets, or in NOT_DAEMON_SECRETS with the reason"
    );
    Ok(())
}
