//! Autopilot watchers: escalation restart → rollback → notify, each once; recovery closes the
#![allow(clippy::unwrap_used)]
//! incident. The watcher is declared in the tree and deployed with SafeSwitch, as in production.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::{json, Value};

fn with_watcher(flag: &std::path::Path) -> String {
    common::BASE.replace(
        "    enable = true;\n",
        &format!(
            "    enable = true;\n    watch.watchers.web = {{\n      check = {{ type = \"command\"; command = [ \"test\" \"-e\" \"{}\" ]; }};\n      intervalSecs = 1;\n      actions = [ \"restart\" \"rollback\" \"notify\" ];\n    }};\n",
            flag.display()
        ),
    )
}

async fn wait_watcher(env: &Env, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, list) = env.get("/watcher/list").await;
        if let Some(w) = list
            .as_array()
            .and_then(|l| l.iter().find(|w| w["name"] == "web"))
        {
            if pred(w) {
                return w.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "watcher never got {what}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_then_recovery() {
    let env = Env::new().await;
    let flag = env.dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let rev = env.commit(&with_watcher(&flag), "watch the web service");
    let w = env.spawn(None);
    let s = env.begin(json!({"generation": rev, "ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(s["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    wait_watcher(&env, "healthy", |w| w["status"]["health"] == "ok").await;

    // Break it: the three steps run in order, once each.
    std::fs::remove_file(&flag).unwrap();
    let failing = wait_watcher(&env, "all three steps", |w| {
        w["status"]["incident"]["steps"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s[2]["detail"] != "in progress")
    })
    .await;
    let steps = failing["status"]["incident"]["steps"].as_array().unwrap();
    let actions: Vec<&str> = steps
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["restart", "rollback", "notify"]);
    assert_eq!(
        steps[0]["ok"], false,
        "a command check names no unit to restart: {}",
        steps[0]
    );
    assert!(
        steps[1]["detail"]
            .as_str()
            .unwrap()
            .contains("to deployed generation"),
        "{}",
        steps[1]
    );
    assert_eq!(steps[2]["ok"], true, "{}", steps[2]);
    let incident = failing["status"]["incident"]["agentd_incident"]
        .as_str()
        .unwrap()
        .to_string();

    // The rollback step is a SafeSwitch to the last deployed generation, started by the watcher.
    let (_, hist) = env.get("/switch/history").await;
    let by_watcher: Vec<&Value> = hist
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["origin"] == "watcher:web")
        .collect();
    assert_eq!(by_watcher.len(), 1, "{hist}");
    assert_eq!(by_watcher[0]["generation"], json!(rev));

    // Still failing: nothing more happens (each step at most once per incident).
    // The steps reach the ledger through watch's spool, so wait for their delivery first.
    let before = env.wait_events("watch.watcher.action", 3).await.len();
    assert_eq!(before, 3);

    // Recover: the incident is closed.
    std::fs::write(&flag, "").unwrap();
    let ok = wait_watcher(&env, "recovery", |w| w["status"]["health"] == "ok").await;
    assert!(ok["status"]["incident"].is_null());
    assert_eq!(ok["status"]["recoveries"], 1);
    env.wait_events("watch.watcher.recovered", 1).await;
    assert_eq!(
        env.agentd.events("watch.watcher.action").await.len(),
        3,
        "no step repeated"
    );
    assert_eq!(env.agentd.events("watch.alert").await.len(), 1);
    let resolved = env.wait_events("incident.resolved", 1).await;
    assert!(resolved[0].payload.contains(&incident), "{resolved:?}");
    w.stop();
}

async fn wait_listed(env: &Env, name: &str, present: bool) {
    let start = Instant::now();
    loop {
        let (_, list) = env.get("/watcher/list").await;
        let found = list.as_array().unwrap().iter().any(|w| w["name"] == name);
        if found == present {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "watcher {name} present={found}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_go_through_the_config_tree() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(first["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let head = env.tree.head().unwrap();

    // Bad input: clear 4xx, tree untouched.
    for (body, needle) in [
        (
            json!({"name": "a.b", "check": {"type": "agentd"}, "interval_secs": 1, "actions": []}),
            "watcher name",
        ),
        (
            json!({"name": "x", "check": {"type": "command", "command": []}, "interval_secs": 1, "actions": []}),
            "command",
        ),
        (
            json!({"name": "x", "check": {"type": "agentd"}, "interval_secs": 0, "actions": []}),
            "interval_secs",
        ),
        (
            json!({"name": "x", "check": {"type": "agentd"}, "interval_secs": 1, "actions": ["reboot"]}),
            "reboot",
        ),
    ] {
        let (status, v) = env.post("/watcher/add", body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{body} → {v}"
        );
    }
    assert_eq!(env.tree.head().unwrap(), head);
    let r = env.client().delete("/watcher/remove/nosuch").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.body);

    let (status, added) = env
        .post(
            "/watcher/add",
            json!({"name": "api1", "check": {"type": "tcp", "host": "127.0.0.1", "port": port, "timeout_secs": 2},
                   "interval_secs": 1, "actions": ["notify"], "ttl_secs": 1}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let done = env
        .wait_terminal(added["switch"]["id"].as_u64().unwrap())
        .await;
    assert_eq!(done["state"], "committed", "{done}");
    env.assert_consistent(&done);
    let text = env
        .tree
        .read_file_at(
            &env.tree.head().unwrap(),
            std::path::Path::new("osmoda.nix"),
        )
        .unwrap();
    assert!(
        text.contains("api1") && text.contains("intervalSecs = 1"),
        "{text}"
    );
    let watch_json = std::fs::read_to_string(env.etc_dir.join("osmoda/watch.json")).unwrap();
    assert!(watch_json.contains("\"api1\""), "{watch_json}");
    wait_listed(&env, "api1", true).await;
    wait_watcher_named(&env, "api1", |w| w["status"]["health"] == "ok").await;

    let r = env.client().delete("/watcher/remove/api1").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["removed"], "api1");
    let done = env
        .wait_terminal(r.body["switch"]["id"].as_u64().unwrap())
        .await;
    assert_eq!(done["state"], "committed", "{done}");
    wait_listed(&env, "api1", false).await;
    let gens = env.tree.generations(10).unwrap();
    assert!(
        gens[0].message.starts_with("remove watcher api1"),
        "{}",
        gens[0].message
    );
    assert!(
        gens[1].message.starts_with("add watcher api1"),
        "{}",
        gens[1].message
    );
    drop(listener);
    w.stop();
}

async fn wait_watcher_named(env: &Env, name: &str, pred: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let (_, list) = env.get("/watcher/list").await;
        if list
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == name && pred(w))
        {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_list_is_paged() {
    let env = Env::new().await;
    let watchers: String = ["a", "b", "c"]
        .iter()
        .map(|n| {
            format!("    watch.watchers.{n} = {{ check = {{ type = \"agentd\"; }}; intervalSecs = 3600; actions = [ \"notify\" ]; }};\n")
        })
        .collect();
    let text = common::BASE.replace(
        "    enable = true;\n",
        &format!("    enable = true;\n{watchers}"),
    );
    let rev = env.commit(&text, "three watchers");
    let w = env.spawn(None);
    let s = env.begin(json!({"generation": rev, "ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(s["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect()
    };
    let start = Instant::now();
    loop {
        let (_, all) = env.get("/watcher/list").await;
        if names(&all).len() == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, page) = env.get("/watcher/list?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(names(&page), ["a", "b"]);
    let (_, page) = env.get("/watcher/list?limit=2&after=b").await;
    assert_eq!(names(&page), ["c"]);
    let (_, page) = env.get("/watcher/list?after=c").await;
    assert_eq!(names(&page), Vec::<String>::new());
    for bad in ["limit=0", "limit=1001", "limit=x", "bogus=1"] {
        let (status, v) = env.get(&format!("/watcher/list?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    w.stop();
}
