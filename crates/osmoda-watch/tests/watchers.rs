//! Autopilot watchers: escalation restart → rollback → notify, each once; recovery closes the
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
    let s = env.begin(json!({"generation": rev, "ttl_secs": 0})).await;
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
    let before = env.agentd.events("watch.watcher.action").await.len();
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
