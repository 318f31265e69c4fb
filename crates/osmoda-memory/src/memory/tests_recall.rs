//! Recall-level rules: the token budget as injected, and rankings that a rebuilt index
//! repeats exactly.

use super::tests::{store_req, Hash8};
use super::*;

/// What a recall injects stays within the token budget (review memory11 finding 2): the
/// `[path:line, at]` line of each hit counts (40 short hits), and so does text whose
/// characters are tokens each (Chinese), which "characters / 4" let run to four times the
/// budget.
#[test]
fn a_recall_injects_no_more_than_its_budget() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(tmp.path());
    opts.max_injected_tokens = 300;
    let m = Memory::open(opts, None, None).expect("open");
    for i in 0..40 {
        m.store(&store_req(&format!("disk note {i}"), "disk full", false))
            .expect("store");
    }
    for i in 0..10 {
        let detail = format!("磁盘已满 {}", "服务停止".repeat(40));
        m.store(&store_req(&format!("cjk {i}"), &detail, true))
            .expect("store");
    }
    let injected = |r: &RecallResponse| -> String {
        r.results
            .iter()
            .map(|h| format!("[{}:{}, {}]\n{}\n\n", h.path, h.line_start, h.at, h.text))
            .collect()
    };
    let ask = |q: &str| {
        m.recall(&RecallRequest {
            query: q.into(),
            max_results: Some(50),
            timeframe: None,
        })
        .expect("recall")
    };
    let r = ask("disk");
    let text = injected(&r);
    assert!(r.results.len() > 1 && r.omitted > 0, "{r:?}");
    assert!(
        text.chars().count().div_ceil(4) <= 300,
        "{} chars: {text}",
        text.len()
    );
    // Each hit rounded up on its own: never less than the whole text's estimate.
    assert!(
        r.tokens >= crate::budget::estimate(&text) && r.tokens <= 300,
        "{}",
        r.tokens
    );
    let r = ask("磁盘已满");
    assert!(!r.results.is_empty() && r.omitted > 0, "{r:?}");
    let cjk = injected(&r).chars().filter(|c| !c.is_ascii()).count();
    assert!(
        cjk <= 300,
        "{cjk} Chinese characters injected for a budget of 300 tokens"
    );
    assert!(r.tokens <= 300, "{}", r.tokens);
}

/// A reindex repeats every ranking, ties included (review memory11 finding 3): the same text
/// twice in a note (a repeated event of one day; the `at:` time is not embedded) has one
/// vector, and the vector ranking ordered such ties by row id, which follows the order of
/// writes and edits: after an edit of the first copy its row was newer than the second's,
/// and a reindex, numbering rows in note order, swapped the two.
#[test]
fn equal_vectors_rank_alike_before_and_after_a_reindex() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let md = tmp.path().join("MEMORY.md");
    let twice = "# Memory\n\n## disk\nfull\n\n## other\nnothing alike\n\n## disk\nfull\n";
    std::fs::write(&md, twice).expect("write");
    let e: Arc<dyn Embedder> = Arc::new(Hash8);
    let mut opts = Options::new(tmp.path());
    opts.min_similarity = Some(-1.0);
    let m = Memory::open(opts, Some(e), None).expect("open");
    // Edit the first copy and put it back: its row is now the newest.
    for text in [twice.replacen("full", "emptied", 1), twice.to_string()] {
        std::fs::write(&md, text).expect("edit");
        m.sync_paths(&["MEMORY.md".to_string()]).expect("sync");
    }
    // No word in common: the vector ranking alone decides.
    let ranking = |m: &Memory| -> Vec<(u32, String)> {
        m.recall(&RecallRequest {
            query: "zzz qqq".into(),
            max_results: Some(10),
            timeframe: None,
        })
        .expect("recall")
        .results
        .into_iter()
        .map(|h| (h.line_start, h.text))
        .collect()
    };
    let before = ranking(&m);
    assert_eq!(before.len(), 3, "{before:?}");
    m.reindex().expect("reindex");
    assert_eq!(before, ranking(&m));
    let at = |line: u32| before.iter().position(|h| h.0 == line);
    // The two copies in note order, wherever the other note falls.
    assert!(at(3) < at(9), "{before:?}");
}
