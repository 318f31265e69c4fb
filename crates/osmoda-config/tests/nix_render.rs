//! lib/ rendered by the real Nix evaluator on fixture option sets: the JSON is accepted by
//! the Rust schema (deny_unknown_fields), pinned by golden files, and the `full` fixture
//! exercises every field and variant of the schema.

mod common;

use anyhow::{Context, Result};
use osmoda_config::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;

/// Writes `value` to a temp file and runs the shared check-config logic on it.
fn check(daemon: &str, value: &Value) -> Result<(), ConfigError> {
    let dir = tempfile::tempdir().map_err(|source| ConfigError::Io {
        path: "tmp".into(),
        source,
    })?;
    let path = dir.path().join(format!("{daemon}.json"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
    .map_err(|source| ConfigError::Io {
        path: path.clone(),
        source,
    })?;
    check_config(daemon, &path)
}

#[test]
fn fixtures_render_valid_configs_matching_golden() -> Result<()> {
    if !common::nix_available("fixtures_render_valid_configs_matching_golden") {
        return Ok(());
    }
    let fixtures = common::fixtures()?;
    assert!(
        fixtures.len() >= 3,
        "expected the fixtures minimal, typical, full, ..."
    );
    for fixture in fixtures {
        let stem = fixture
            .file_stem()
            .context("stem")?
            .to_string_lossy()
            .into_owned();
        let out = common::render_fixture(&fixture)?;
        let daemons = &out["daemons"];
        let names: BTreeSet<&str> = daemons
            .as_object()
            .context("render returns an attrset")?
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            names,
            DAEMONS.iter().copied().collect(),
            "{stem}: render must return every daemon"
        );
        for d in DAEMONS {
            check(d, &daemons[d]).map_err(|e| anyhow::anyhow!("fixture {stem}, {d}.json: {e}"))?;
        }
        common::check_golden(&stem, daemons)?;
        common::check_golden(&format!("{stem}.openclaw"), &out["openclaw"])?;
    }
    Ok(())
}

fn typed<T: DeserializeOwned + serde::Serialize>(v: &Value) -> Result<(T, Value)> {
    let t: T = serde_json::from_value(v.clone())?;
    let back = serde_json::to_value(&t)?;
    Ok((t, back))
}

/// Field patterns of a JSON tree: map keys become `<name>`, list items `*`, and objects
/// tagged by `"type"` add `[type]`, so each variant's fields are their own patterns.
/// `seen` gets every pattern, `reached` those with at least one non-null, non-empty value.
fn patterns(
    v: &Value,
    path: &str,
    keyed: bool,
    seen: &mut BTreeSet<String>,
    reached: &mut BTreeSet<String>,
) {
    seen.insert(path.to_string());
    let filled = match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    if filled {
        reached.insert(path.to_string());
    }
    match v {
        Value::Array(a) => a
            .iter()
            .for_each(|x| patterns(x, &format!("{path}[*]"), false, seen, reached)),
        Value::Object(o) => {
            let tag = o
                .get("type")
                .and_then(Value::as_str)
                .map(|t| format!("[{t}]"))
                .unwrap_or_default();
            for (k, x) in o {
                let p = if keyed {
                    format!("{path}.<name>")
                } else {
                    format!("{path}{tag}.{k}")
                };
                // Maps keyed by name are the schema's BTreeMaps; their values are structs.
                patterns(x, &p, is_map(&p), seen, reached);
            }
        }
        _ => {}
    }
}

/// Schema fields that are `BTreeMap<String, _>` (keys are names, not fields).
fn is_map(pattern: &str) -> bool {
    [
        "watch.watchers",
        "routines.routines",
        "keyd.policy.chains",
        "keyd.policy.wallets",
        "mesh.peers",
        "egress.capabilities",
    ]
    .contains(&pattern)
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Variant names of a serde enum, read from serde's own "unknown variant" error.
fn variants<T: DeserializeOwned>(probe: Value) -> BTreeSet<String> {
    let msg = match serde_json::from_value::<T>(probe) {
        Ok(_) => return BTreeSet::new(),
        Err(e) => e.to_string(),
    };
    // serde writes "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, ...".
    let list = msg.split("expected ").nth(1).unwrap_or_default();
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split(", ")
        .flat_map(|s| s.split(" or "))
        .filter_map(|s| s.split('`').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn full_fixture_covers_every_schema_field_and_variant() -> Result<()> {
    if !common::nix_available("full_fixture_covers_every_schema_field_and_variant") {
        return Ok(());
    }
    let out = common::render_fixture(&common::repo_root().join("tests/nix/fixtures/full.nix"))?;
    let d = &out["daemons"];

    // Round trip through the typed schema: nothing lib renders is dropped, and since the
    // schema serializes absent options as null, no null means every field was reached.
    let (agentd, a) = typed::<AgentdConfig>(&d["agentd"])?;
    let (watch, w) = typed::<WatchConfig>(&d["watch"])?;
    let (routines, r) = typed::<RoutinesConfig>(&d["routines"])?;
    let (keyd, k) = typed::<KeydConfig>(&d["keyd"])?;
    let (mesh, m) = typed::<MeshConfig>(&d["mesh"])?;
    let (egress, e) = typed::<EgressConfig>(&d["egress"])?;
    let (voice, v) = typed::<VoiceConfig>(&d["voice"])?;
    let (mut seen, mut reached) = (BTreeSet::new(), BTreeSet::new());
    for (name, back) in [
        ("agentd", a),
        ("watch", w),
        ("routines", r.clone()),
        ("keyd", k),
        ("mesh", m),
        ("egress", e),
        ("voice", v),
    ] {
        patterns(&back, name, is_map(name), &mut seen, &mut reached);
        let mut stripped = back;
        strip_nulls(&mut stripped);
        assert_eq!(
            stripped, d[name],
            "{name}.json changes in a typed round trip"
        );
    }
    let missing: Vec<&String> = seen.difference(&reached).collect();
    assert!(
        missing.is_empty(),
        "schema fields the full fixture never fills: {missing:#?}"
    );
    assert!(
        seen.len() > 80,
        "only {} field patterns seen; the walk is broken",
        seen.len()
    );
    for cfg in [
        agentd.validate(),
        watch.validate(),
        routines.validate(),
        keyd.validate(),
        mesh.validate(),
        egress.validate(),
        voice.validate(),
    ] {
        cfg.map_err(anyhow::Error::msg)?;
    }

    let checks: BTreeSet<String> = watch
        .watchers
        .values()
        .map(|w| &w.check)
        .chain(watch.safe_switch.health_checks.iter())
        .map(|c| c.kind().to_string())
        .collect();
    assert_eq!(
        checks,
        variants::<HealthCheck>(serde_json::json!({"type": "?"})),
        "health check types"
    );
    let actions: BTreeSet<String> = watch
        .watchers
        .values()
        .flat_map(|w| w.actions.iter())
        .map(|a| serde_json::to_value(a).map(|v| v.as_str().unwrap_or_default().to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        actions,
        variants::<WatchAction>(serde_json::json!("?")),
        "watcher actions"
    );
    let triggers: BTreeSet<String> = r["routines"]
        .as_object()
        .context("routines")?
        .values()
        .map(|x| {
            x["trigger"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        triggers,
        variants::<Trigger>(serde_json::json!({"type": "?"})),
        "trigger types"
    );
    let kinds: BTreeSet<String> = r["routines"]
        .as_object()
        .context("routines")?
        .values()
        .map(|x| x["action"]["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds,
        variants::<RoutineAction>(serde_json::json!({"type": "?"})),
        "action types"
    );
    let methods: BTreeSet<String> = routines
        .routines
        .values()
        .flat_map(|x| match &x.action {
            RoutineAction::Chain { steps } => steps.clone(),
            other => vec![other.clone()],
        })
        .filter_map(|a| match a {
            RoutineAction::Http { method, .. } => Some(method.as_str().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        methods,
        variants::<HttpMethod>(serde_json::json!("?")),
        "http methods"
    );
    let chains: BTreeSet<String> = keyd
        .policy
        .chains
        .keys()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(chains, variants::<Chain>(serde_json::json!("?")), "chains");
    assert!(
        !mesh.peers.is_empty() && !egress.capabilities.is_empty() && voice.whisper_model.is_some()
    );
    assert!(agentd.daemons.voice.is_some());
    Ok(())
}

#[test]
fn null_means_absent_like_the_evaluated_module() -> Result<()> {
    if !common::nix_available("null_means_absent_like_the_evaluated_module") {
        return Ok(());
    }
    // The module hands lib fully evaluated options, where unset nullable ones are null.
    let with_nulls = common::render_inline(
        r#"{ watch.watchers.w = { check = { type = "agentd"; unit = null; url = null; timeoutSecs = null; }; intervalSecs = 5; actions = [ "notify" ]; };
            voice.whisperModel = null; keyd.secretFile = null; memory.embeddingEndpoint = null;
            routines.x = { enable = true; trigger = { type = "interval"; seconds = 9; schedule = null; secretFile = null; }; action = { type = "http"; method = "GET"; path = "/health"; body = null; command = null; }; }; }"#,
    )?;
    let without = common::render_inline(
        r#"{ watch.watchers.w = { check = { type = "agentd"; }; intervalSecs = 5; actions = [ "notify" ]; };
            routines.x = { trigger = { type = "interval"; seconds = 9; }; action = { type = "http"; method = "GET"; path = "/health"; }; }; }"#,
    )?;
    assert_eq!(with_nulls, without);
    assert_eq!(
        without["watch"]["watchers"]["w"]["check"]["timeout_secs"], 10,
        "default filled"
    );
    assert!(
        without["routines"]["routines"]["x"]["action"]
            .get("output_limit_bytes")
            .is_none(),
        "command-only default kept off http actions"
    );
    Ok(())
}

#[test]
fn typos_and_missing_values_fail_check_config_with_the_field() -> Result<()> {
    if !common::nix_available("typos_and_missing_values_fail_check_config_with_the_field") {
        return Ok(());
    }
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "watch",
            r#"{ watch.watchers.w.check = { type = "http"; url = "http://127.0.0.1/"; expectStauts = 200; }; }"#,
            "watchers.w.check",
            "expect_stauts",
        ),
        (
            "watch",
            r#"{ watch.watchers.w = { check = { type = "tcp"; host = "127.0.0.1"; port = 22; }; interval = 3; }; }"#,
            "watchers.w",
            "unknown field `interval`",
        ),
        (
            "mesh",
            r#"{ mesh.peers.p = { endpoint = "127.0.0.1:1"; }; }"#,
            "peers.p",
            "missing field `public_keys`",
        ),
        (
            "keyd",
            r#"{ keyd.policy.chains.bitcoin = { perTxMax = 1; dailyLimit = 2; }; }"#,
            "policy.chains",
            "unknown variant `bitcoin`",
        ),
        (
            "egress",
            r#"{ egress.listen = "0.0.0.0:19999"; }"#,
            "",
            "must be a loopback address",
        ),
        // A relevance threshold is a cosine similarity, for a named model.
        (
            "agentd",
            r#"{ memory.relevanceThresholds.nomic = 1.5; }"#,
            "",
            "memory.relevance_thresholds.\"nomic\" = 1.5",
        ),
        (
            "agentd",
            r#"{ memory.relevanceThresholds.nomic = "high"; }"#,
            "memory.relevance_thresholds",
            "invalid type",
        ),
    ];
    for (daemon, cfg, field, needle) in cases {
        let rendered = common::render_inline(cfg)?;
        let err = check(daemon, &rendered[daemon]).expect_err(cfg);
        let shown = err.to_string();
        assert!(shown.contains(needle), "{cfg}: {shown}");
        if let ConfigError::Parse { field: f, .. } = &err {
            assert!(
                f.starts_with(field),
                "{cfg}: field {f} should start with {field}"
            );
        }
    }
    Ok(())
}

#[test]
fn unsupported_lists_what_the_local_backend_cannot_apply() -> Result<()> {
    if !common::nix_available("unsupported_lists_what_the_local_backend_cannot_apply") {
        return Ok(());
    }
    let root = common::repo_root();
    let v = common::nix_eval_json(
        "{ repo }: let L = import (/. + repo + \"/lib\"); in { \
           none = L.unsupported { enable = true; watch.watchers = {}; routines.r = {}; }; \
           some = L.unsupported { stateDir = \"/x\"; agentd.approvalSocket = \"/y\"; mesh.openFirewall = true; \
                                  egress.socket = \"/z\"; gateway.enable = true; bogus = 1; voice.whisperModel = null; }; }",
        &[("repo", &root.to_string_lossy())],
    )?;
    assert_eq!(v["none"], serde_json::json!([]));
    assert_eq!(
        v["some"],
        serde_json::json!([
            "services.osmoda.stateDir",
            "services.osmoda.gateway",
            "services.osmoda.agentd.approvalSocket",
            "services.osmoda.mesh.openFirewall",
            "services.osmoda.egress.socket",
            "services.osmoda.bogus"
        ])
    );
    Ok(())
}

#[test]
fn golden_mismatch_is_detected() -> Result<()> {
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        return Ok(());
    }
    let err = common::check_golden("minimal", &serde_json::json!({"not": "the golden"}))
        .expect_err("a different value must not match the golden file");
    assert!(err.to_string().contains("minimal.json differs"), "{err}");
    Ok(())
}

#[test]
fn generations_template_renders_valid_configs() -> Result<()> {
    if !common::nix_available("generations_template_renders_valid_configs") {
        return Ok(());
    }
    // The starter tree's data-only osmoda.nix is what the local backend renders first.
    let root = common::repo_root();
    let template = root.join("generations/osmoda.nix");
    if !template.exists() {
        eprintln!(
            "skipped: generations_template_renders_valid_configs: {} not present yet",
            template.display()
        );
        return Ok(());
    }
    let out = common::nix_eval_json(
        "{ repo }: let L = import (/. + repo + \"/lib\"); in \
         L.render (import (/. + repo + \"/generations/osmoda.nix\") { }).services.osmoda",
        &[("repo", &root.to_string_lossy())],
    )?;
    for d in DAEMONS {
        check(d, &out[d]).map_err(|e| anyhow::anyhow!("generations/osmoda.nix, {d}.json: {e}"))?;
    }
    Ok(())
}

#[test]
fn lib_is_pure_builtins() -> Result<()> {
    let text = std::fs::read_to_string(common::repo_root().join("lib/default.nix"))?;
    for banned in [
        "<nixpkgs>",
        "import <",
        "pkgs.",
        "fetchTarball",
        "fetchurl",
        "builtins.currentSystem",
    ] {
        assert!(
            !text.contains(banned),
            "lib/default.nix must stay pure builtins, found {banned:?}"
        );
    }
    Ok(())
}
