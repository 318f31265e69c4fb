//! A refused request changes nothing: no generation is recorded for a switch that cannot start
//! (bad TTL, a check that could never pass, another switch in the way, a race of begins), a
//! refusal by agentd reaches the caller with agentd's status and detail, and a rollback to
//! before the first deployment leaves none of the undone generation's settings in force.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::{json, Value};

fn add_body(name: &str, extra: Value) -> Value {
    let mut b = json!({"name": name, "check": {"type": "agentd"}, "interval_secs": 5,
        "actions": ["notify"], "ttl_secs": 1});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_switches_and_watcher_edits_record_no_generation() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let head = env.tree.head().unwrap();
    let many: Vec<Value> = (0..65)
        .map(|i| json!({"type": "disk", "path": format!("/{i}"), "min_free_percent": 0}))
        .collect();
    let https = json!({"type": "http", "url": "https://127.0.0.1/"});
    // The switch request is refused before the watcher edit reaches the tree.
    for (path, body, needle) in [
        (
            "/watcher/add",
            add_body("a", json!({"ttl_secs": 0})),
            "at least 1",
        ),
        (
            "/watcher/add",
            add_body("a", json!({"ttl_secs": 86_401})),
            "maximum",
        ),
        (
            "/watcher/add",
            add_body("a", json!({"check": https})),
            "http://",
        ),
        (
            "/watcher/add",
            add_body(
                "a",
                json!({"check": {"type": "http", "url": "http://127.0.0.1:0/"}}),
            ),
            "port 0",
        ),
        (
            "/watcher/add",
            add_body(
                "a",
                json!({"check": {"type": "http", "url": "http://h/a b"}}),
            ),
            "path",
        ),
        (
            "/switch/begin",
            json!({"health_checks": [https]}),
            "http://",
        ),
        (
            "/switch/begin",
            json!({"health_checks": [{"type": "http", "url": "http://h:99999/"}]}),
            "port",
        ),
        (
            "/switch/begin",
            json!({"health_checks": many}),
            "at most 64",
        ),
        // A plan becomes a commit message and part of ledger events (agentd takes 1 MiB).
        (
            "/switch/begin",
            json!({"plan": "x".repeat(1_500_000)}),
            "plan is 1500000 bytes; the limit is 4096",
        ),
        (
            "/switch/begin",
            json!({"plan": "é".repeat(2049)}),
            "plan is 4098 bytes",
        ),
    ] {
        let (status, v) = env.post(path, body.clone()).await;
        assert_eq!(
            (status, v["detail"]["kind"].as_str()),
            (400, Some("bad_request")),
            "{body} → {v}"
        );
        assert!(error_of(&v).contains(needle), "{body} → {v}");
    }
    assert_eq!(
        env.tree.head().unwrap(),
        head,
        "a refused request recorded a generation"
    );
    let (_, hist) = env.get("/switch/history").await;
    assert_eq!(hist, json!([]));

    // agentd's own refusal keeps agentd's status and detail, and records nothing either.
    let (status, v) = env
        .post(
            "/watcher/add",
            add_body("big", json!({"interval_secs": u64::MAX})),
        )
        .await;
    assert_eq!(
        (status, v["detail"]["kind"].as_str()),
        (400, Some("agentd_refused")),
        "{v}"
    );
    assert!(
        error_of(&v).contains("agentd refused POST /config/set: "),
        "{v}"
    );
    assert!(error_of(&v).contains("integer range"), "{v}");
    assert!(
        !error_of(&v).contains('{'),
        "agentd's message, not its JSON body: {v}"
    );
    assert!(v["detail"]["hint"].is_string(), "{v}");
    assert_eq!(env.tree.head().unwrap(), head);

    // While a switch runs, a watcher edit is refused before it is committed.
    let s = env.begin(json!({"ttl_secs": 30})).await;
    let (status, v) = env.post("/watcher/add", add_body("b", json!({}))).await;
    assert_eq!(
        (status, v["detail"]["kind"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    assert!(
        error_of(&v).contains("only one switch runs at a time"),
        "{v}"
    );
    assert_eq!(
        env.tree.head().unwrap(),
        head,
        "the edit must wait for no switch"
    );
    let id = s["id"].as_u64().unwrap();
    // An oversized rollback reason is refused and the switch keeps running.
    let (status, v) = env
        .post(
            &format!("/switch/rollback/{id}"),
            json!({"reason": "r".repeat(1_500_000)}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(error_of(&v).contains("reason is 1500000 bytes"), "{v}");
    let (_, now) = env.get(&format!("/switch/status/{id}")).await;
    assert!(
        !["rolled-back", "failed"].contains(&now["state"].as_str().unwrap_or_default()),
        "{now}"
    );
    let (status, v) = env
        .post(
            &format!("/switch/rollback/{id}"),
            json!({"reason": "r".repeat(4096)}),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    // The same watcher twice: agentd's 409 ("nothing changed") is passed on as a 409.
    let (status, v) = env.post("/watcher/add", add_body("c", json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let done = env.wait_terminal(v["switch"]["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    let head = env.tree.head().unwrap();
    let (status, v) = env.post("/watcher/add", add_body("c", json!({}))).await;
    assert_eq!(
        (status, v["detail"]["kind"].as_str()),
        (409, Some("agentd_refused")),
        "{v}"
    );
    assert!(error_of(&v).contains("nothing changed"), "{v}");
    assert_eq!(env.tree.head().unwrap(), head);

    // Rolling back a finished switch says what to do instead.
    let (status, v) = env.post(&format!("/switch/rollback/{id}"), json!({})).await;
    assert_eq!(
        status, 200,
        "an already rolled-back switch answers its state: {v}"
    );
    let (status, v) = env
        .post(&format!("/switch/rollback/{}", done["id"]), json!({}))
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(
        error_of(&v).contains("only a switch that has not finished"),
        "{v}"
    );
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_begins_to_an_older_generation_record_it_once() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let old = env.tree.head().unwrap();
    let first = env.begin(json!({"ttl_secs": 1})).await;
    env.wait_terminal(first["id"].as_u64().unwrap()).await;
    let newer = env.commit(&common::variant(1), "newer");
    let s = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(s["id"].as_u64().unwrap()).await["state"],
        "committed"
    );

    let answers = futures_join(&env, json!({"generation": old, "ttl_secs": 30}), 6).await;
    let ok: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one begin wins: {answers:?}");
    for (status, v) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*status, v["detail"]["kind"].as_str()),
            (409, Some("conflict")),
            "{v}"
        );
        assert!(error_of(v).contains("one switch runs at a time"), "{v}");
    }
    let gens = env.tree.generations(10).unwrap();
    assert_eq!(
        gens[1].rev, newer,
        "one restore commit on top of {newer}: {gens:?}"
    );
    assert!(
        gens[0].message.starts_with("Switch to generation "),
        "{}",
        gens[0].message
    );
    let id = ok[0].1["id"].as_u64().unwrap();
    let (status, _) = env.post(&format!("/switch/rollback/{id}"), json!({})).await;
    assert_eq!(status, 200);
    w.stop();
}

/// `n` identical `POST /switch/begin` at once, each on its own connection.
async fn futures_join(env: &Env, body: Value, n: usize) -> Vec<(u16, Value)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = env.client();
        let body = body.clone();
        set.spawn(async move {
            let r = client.post("/switch/begin", &body).await.unwrap();
            (r.status, r.body)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_before_the_first_deployment_drops_its_settings() {
    let env = Env::new().await;
    let w = env.spawn(None);
    // The first generation ever applied brings a watcher and a default check, both passing.
    let with_settings = common::BASE
        .replace(
            "healthChecks = [ ];",
            "healthChecks = [ { type = \"process\"; name = \"osmoda-watch\"; } ];",
        )
        .replace(
            "    enable = true;\n",
            "    enable = true;\n    watch.watchers.root = {\n      check = { type = \"disk\"; path = \"/\"; minFreePercent = 0; };\n      intervalSecs = 60;\n      actions = [ \"notify\" ];\n    };\n",
        );
    env.commit(&with_settings, "a watcher and a default check");
    let s = env.begin(json!({"ttl_secs": 60})).await;
    wait_health(&env, |h| h["watchers"] == 1).await;
    let id = s["id"].as_u64().unwrap();
    let (status, v) = env
        .post(
            &format!("/switch/rollback/{id}"),
            json!({"reason": "not yet"}),
        )
        .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("rolled-back")),
        "{v}"
    );
    assert!(
        env.active_link().is_none(),
        "nothing deployed, nothing active"
    );
    wait_health(&env, |h| h["watchers"] == 0).await;

    // The undone generation's default check and watcher check are no longer added.
    env.commit(common::BASE, "back to no settings");
    let s = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(s["health_checks"], json!([]), "{s}");
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    w.stop();
}

async fn wait_health(env: &Env, pred: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let (_, h) = env.get("/health").await;
        if pred(&h) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never reached: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_switch_is_refused_with_the_gates_own_403_and_ticket() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let without_alice = env.tree.head().unwrap();
    let cfg = env.tree_dir.join("configuration.nix");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen(
            "  time.timeZone",
            "  users.users.alice = { isNormalUser = true; extraGroups = [ \"wheel\" ]; };\n  time.timeZone",
            1,
        ),
    )
    .unwrap();
    env.tree
        .commit_worktree(&common::actor(), "add alice", None)
        .unwrap();
    let s = env.begin(json!({"ttl_secs": 1})).await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    let head = env.tree.head().unwrap();

    // Through osmoda-watch: the gate's 403, exactly as agentd gives it.
    let (status, via_watch) = env
        .post(
            "/switch/begin",
            json!({"generation": without_alice, "ttl_secs": 1}),
        )
        .await;
    assert_eq!(status, 403, "{via_watch}");
    let d = &via_watch["detail"];
    assert_eq!(d["kind"], "approval_required", "{via_watch}");
    for field in ["ticket", "approve", "hint", "expires_at"] {
        assert!(d[field].is_string(), "{field} in {via_watch}");
    }
    assert!(
        d["operation"].is_object() && d["effect"].is_array(),
        "{via_watch}"
    );
    assert!(
        error_of(&via_watch).contains("removes user alice"),
        "{via_watch}"
    );
    // Asked of agentd directly, the same request gets the same answer (the same open ticket).
    let r = osmoda_client::Client::new(&env.agentd.socket)
        .post(
            "/config/restore",
            &json!({"rev": without_alice, "reason": "back", "purpose": "switch"}),
        )
        .await
        .unwrap();
    assert_eq!((r.status, &r.body), (403, &via_watch));
    assert_eq!(env.tree.head().unwrap(), head, "a refusal records nothing");

    // Approved by a person, the same begin with the ticket lands.
    let id = d["ticket"].as_str().unwrap();
    let human = osmoda_client::Client::new(env.approval_socket());
    let r = human
        .post(&format!("/approval/{id}/approve"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let s = env
        .begin(json!({"generation": without_alice, "ttl_secs": 1, "approval": id}))
        .await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(!text.contains("alice"), "{text}");
    w.stop();
}
