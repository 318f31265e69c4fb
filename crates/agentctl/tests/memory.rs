//! `agentctl memory store|recall|reindex|health` against a real in-process agentd running the
//! real embedding model (fetched as CI does: `OSMODA_MEMORY_MODEL_DIR` or
//! scripts/fetch-memory-model).

mod common;

use std::path::PathBuf;

use common::{stderr, stdout};

fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OSMODA_MEMORY_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-memory-model");
    let out = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "fetching the model failed: {}",
        stderr(&out)
    );
    PathBuf::from(stdout(&out).trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_recall_reindex_health() {
    let mut settings = agentd::Settings::default();
    settings.memory.model_dir = Some(model_dir());
    let env = common::start_with(settings).await;
    let notes = env.dir.path().join("state/memory");

    let out = env
        .ctl_code(
            0,
            &[
                "memory",
                "store",
                "Backups run at 02:00",
                "--detail",
                "restic to the NAS, 7 daily kept",
                "--category",
                "config",
                "--tag",
                "backup",
            ],
        )
        .await;
    assert!(out.contains("memory/") && out.contains(".md"), "{out}");
    env.ctl_code(
        0,
        &[
            "memory",
            "store",
            "The owner prefers metric units",
            "--durable",
        ],
    )
    .await;
    let durable = std::fs::read_to_string(notes.join("MEMORY.md")).expect("MEMORY.md");
    assert!(
        durable.contains("## The owner prefers metric units"),
        "{durable}"
    );

    // No word in common with the note: found by meaning, shown with its file and line.
    let out = env
        .ctl_code(
            0,
            &[
                "memory",
                "recall",
                "when is the nightly snapshot of the data",
                "--max",
                "1",
            ],
        )
        .await;
    assert!(
        out.contains("restic to the NAS") && out.contains("memory/"),
        "{out}"
    );
    let json = env
        .ctl_code(
            0,
            &["--json", "memory", "recall", "units", "--timeframe", "7d"],
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["mode"], "hybrid", "{v}");
    assert!(
        v["results"].as_array().is_some_and(|r| !r.is_empty()),
        "{v}"
    );

    let health = env.ctl_code(0, &["--json", "memory", "health"]).await;
    let h: serde_json::Value = serde_json::from_str(&health).expect("json");
    assert_eq!(h["model_status"], "ready", "{h}");
    assert_eq!(h["collection_size"], 2, "{h}");

    // The index goes; reindex rebuilds it from the two notes alone, and recall is unchanged.
    std::fs::remove_file(notes.join(".index.sqlite")).expect("rm index");
    let out = env.ctl_code(0, &["--json", "memory", "reindex"]).await;
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (r["files_changed"].as_u64(), r["embedded"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    let again = env
        .ctl_code(
            0,
            &["--json", "memory", "recall", "units", "--timeframe", "7d"],
        )
        .await;
    let w: serde_json::Value = serde_json::from_str(&again).expect("json");
    // Same notes, order, lines and scores; the cosine may differ in the last f32 digit, since
    // reindex embeds the notes in one batch (padded) and store embedded each alone.
    assert_eq!(
        without_similarity(&w["results"]),
        without_similarity(&v["results"])
    );
    for (a, b) in w["results"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(v["results"].as_array().into_iter().flatten())
    {
        let (a, b) = (
            a["similarity"].as_f64().expect("similarity"),
            b["similarity"].as_f64().expect("similarity"),
        );
        assert!(
            (a - b).abs() < 1e-5,
            "similarity {a} after reindex, {b} before"
        );
    }

    // Refusals exit 1 with agentd's reason, and write nothing.
    let before = std::fs::read_to_string(notes.join("MEMORY.md")).expect("read");
    let o = env
        .ctl(&["memory", "recall", "x", "--timeframe", "last tuesday"])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("timeframe"), "{}", stderr(&o));
    let o = env
        .ctl(&[
            "memory",
            "store",
            "bad tag",
            "--durable",
            "--tag",
            "no spaces",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("tag"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(notes.join("MEMORY.md")).expect("read"),
        before
    );
}

/// `results` with each hit's `similarity` taken out (compared separately, within f32 noise).
fn without_similarity(results: &serde_json::Value) -> serde_json::Value {
    let mut r = results.clone();
    for hit in r.as_array_mut().into_iter().flatten() {
        if let Some(o) = hit.as_object_mut() {
            o.remove("similarity");
        }
    }
    r
}
