//! Command actions that declare a ring sandbox (`sandbox = "ring2"` or `"ring1"`): agentd runs
//! them through `POST /sandbox/exec`; this daemon only asks and records the outcome.
//!
//! Why agentd and not osmoda-sandbox's ring in this process: agentd is the one owner of
//! capability tokens (a Ring 1 run's token is minted from egress.json with the key only agentd
//! holds, for exactly the routine's capabilities and only as long as the run may last), it
//! records every sandbox run in the ledger (`sandbox.exec`, never the token), and it judges
//! the capabilities' declared binds; its unit is the one opened for bubblewrap's network
//! namespaces and cgroups, while osmoda-routines runs as an unprivileged user. The request is
//! marked with the run's action label (`osmoda_client::Client::for_action`), so agentd gives it
//! none of this daemon's standing and the `sandbox.exec` event names the run
//! (`action=routine-run.<id>`), which is how the loop guard traces it ([`crate::events`]).

use std::collections::BTreeMap;
use std::time::Duration;

use osmoda_config::Sandbox;
use serde_json::{json, Value};

use crate::actions::{
    action_label, cap, failed, mark_truncated, run_env, sha256_hex, ActionEnv, RingRun, RunInfo,
};
use crate::history::Outcome;

/// Time agentd may take beyond the command's own budget: building the sandbox, minting the
/// token, starting the relay, recording the event.
pub const SETUP_SECS: u64 = 30;

/// The body of `POST /sandbox/exec` for `r` in run `info`.
pub fn request(r: &RingRun<'_>, info: &RunInfo) -> Value {
    let mut env: BTreeMap<String, String> = run_env(info).into_iter().collect();
    env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut body = json!({ "argv": r.argv, "timeout_sec": r.timeout_secs, "env": env });
    if r.sandbox == Sandbox::Ring1 {
        body["capabilities"] = json!(r.capabilities);
    }
    if let Some(m) = r.memory_mb {
        body["memory_mb"] = json!(m);
    }
    if let Some(t) = r.max_tasks {
        body["max_tasks"] = json!(t);
    }
    body
}

/// Runs `r` through agentd's `/sandbox/exec` and says how it went. agentd refusing the run
/// (a capability no longer declared, egress not running, bubblewrap missing) is a failed run
/// with agentd's words; nothing ran then.
pub async fn run(r: &RingRun<'_>, env: &ActionEnv, info: &RunInfo) -> Outcome {
    let ring = r.sandbox.as_str();
    let client = osmoda_client::Client::new(&env.agentd_socket)
        .for_action(action_label(info.run_id))
        .with_timeout(Duration::from_secs(r.timeout_secs + SETUP_SECS));
    match client.post("/sandbox/exec", &request(r, info)).await {
        Err(e) => failed(format!(
            "could not ask agentd to run the {ring} sandbox (/sandbox/exec): {e}"
        )),
        Ok(resp) if !resp.is_success() => {
            let why = resp.body["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| resp.body.to_string());
            failed(format!(
                "agentd refused to run the {ring} sandbox ({}): {why}; nothing ran",
                resp.status
            ))
        }
        Ok(resp) => outcome(ring, &resp.body, r.output_limit),
    }
}

/// The outcome of a `/sandbox/exec` answer, each stream kept to `limit` bytes.
pub fn outcome(ring: &str, a: &Value, limit: usize) -> Outcome {
    let text = |k: &str| a[k].as_str().unwrap_or_default().to_string();
    let (stdout, cut_out) = cap(text("stdout"), limit);
    let (stderr, cut_err) = cap(text("stderr"), limit);
    let truncated = cut_out || cut_err || a["truncated"].as_bool().unwrap_or(false);
    let exit = a["exit_code"].as_i64();
    let ok = exit == Some(0);
    let all = format!("{stdout}{stderr}");
    let output_sha256 = sha256_hex(all.as_bytes());
    let output = if truncated {
        mark_truncated(all, limit)
    } else {
        all
    };
    let error = (!ok).then(|| {
        let how = if a["timed_out"].as_bool() == Some(true) {
            "timed out".to_string()
        } else if let Some(c) = exit {
            format!("exit code {c}")
        } else if let Some(s) = a["signal"].as_i64() {
            format!("signal {s}")
        } else {
            "no exit status".to_string()
        };
        let memory = if a["memory_exceeded"].as_bool() == Some(true) {
            ", over its memory limit"
        } else {
            ""
        };
        let cut = if truncated { " (output truncated)" } else { "" };
        format!("{how} in the {ring} sandbox{memory}{cut}")
    });
    Outcome {
        ok,
        exit,
        output,
        output_sha256,
        truncated,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Fired;

    fn info() -> RunInfo {
        RunInfo {
            routine: "fetch".into(),
            run_id: 7,
            fired: Fired {
                kind: "manual".into(),
                reference: "uid=0".into(),
                payload: Some(json!({ "why": "test" })),
                chain: Vec::new(),
                origin: None,
            },
        }
    }

    /// The request carries the run's variables and the routine's, the capabilities only for
    /// Ring 1, and the limits only when declared.
    #[test]
    fn the_request_is_sandbox_execs_body() {
        let env = BTreeMap::from([("MODE".to_string(), "x".to_string())]);
        let argv = vec!["curl".to_string(), "https://x".to_string()];
        let caps = vec!["web".to_string()];
        let mut r = RingRun {
            sandbox: Sandbox::Ring1,
            argv: &argv,
            capabilities: &caps,
            memory_mb: Some(64),
            max_tasks: None,
            timeout_secs: 20,
            output_limit: 100,
            env: &env,
        };
        let b = request(&r, &info());
        assert_eq!(b["argv"], json!(["curl", "https://x"]));
        assert_eq!(b["timeout_sec"], 20);
        assert_eq!(b["capabilities"], json!(["web"]));
        assert_eq!(b["memory_mb"], 64);
        assert!(b.get("max_tasks").is_none(), "{b}");
        assert_eq!(b["env"]["MODE"], "x");
        assert_eq!(b["env"]["OSMODA_ROUTINE"], "fetch");
        assert_eq!(b["env"]["OSMODA_RUN_ID"], "7");
        assert_eq!(b["env"]["OSMODA_PAYLOAD"], r#"{"why":"test"}"#);
        r.sandbox = Sandbox::Ring2;
        r.capabilities = &[];
        let b = request(&r, &info());
        assert!(b.get("capabilities").is_none(), "{b}");
    }

    /// Exit, timeout, signal and memory read as the boundary's outcomes do; the streams are
    /// kept to the routine's limit and a cut is marked.
    #[test]
    fn answers_become_outcomes() {
        let ok = outcome(
            "ring2",
            &json!({ "exit_code": 0, "stdout": "out\n", "stderr": "err\n", "truncated": false }),
            100,
        );
        assert!(ok.ok && ok.error.is_none() && !ok.truncated, "{ok:?}");
        assert_eq!((ok.exit, ok.output.as_str()), (Some(0), "out\nerr\n"));
        assert_eq!(ok.output_sha256, sha256_hex(b"out\nerr\n"));
        let fail = outcome(
            "ring1",
            &json!({ "exit_code": 3, "stdout": "", "stderr": "" }),
            100,
        );
        assert_eq!(
            fail.error.as_deref(),
            Some("exit code 3 in the ring1 sandbox")
        );
        let t = outcome(
            "ring2",
            &json!({ "exit_code": null, "timed_out": true, "stdout": "", "stderr": "" }),
            100,
        );
        assert_eq!((t.ok, t.exit), (false, None));
        assert_eq!(t.error.as_deref(), Some("timed out in the ring2 sandbox"));
        let m = outcome(
            "ring2",
            &json!({ "exit_code": null, "signal": 9, "memory_exceeded": true, "stdout": "", "stderr": "" }),
            100,
        );
        assert_eq!(
            m.error.as_deref(),
            Some("signal 9 in the ring2 sandbox, over its memory limit")
        );
        let big = outcome(
            "ring2",
            &json!({ "exit_code": 0, "stdout": "a".repeat(10), "stderr": "" }),
            4,
        );
        assert!(big.ok && big.truncated, "{big:?}");
        assert_eq!(
            big.output,
            format!("aaaa\n{} after 4 bytes]", crate::history::TRUNCATED_MARK)
        );
    }
}
