//! Retrieval quality on a labelled set: 205 operations notes, 50 queries written for this
//! test (data/labelled-*.txt). Recall@5 of BM25 only, vectors only and hybrid (RRF, k = 60)
//! is printed, for all queries and for the even- and odd-numbered halves; hybrid must beat
//! both on all queries.
//!
//! The notes are written as markdown with fixed dates (as a person or `/memory/store` would
//! write them) and indexed by a sync, so every run embeds the same texts in the same batches
//! and the figures do not depend on the day the test runs.

mod common;

use std::collections::HashSet;
use std::fmt::Write as _;

use osmoda_memory::{Mode, StoreRequest};

fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

/// The notes in the layout `/memory/store` writes: incidents in one daily note, the rest in
/// `MEMORY.md`; the note's id as its tag, so a chunk maps back to its note.
fn write_notes(dir: &std::path::Path) {
    let mut durable = String::from("# Memory\n");
    let mut daily = String::from("# 2026-01-15\n");
    for (i, l) in lines(include_str!("data/labelled-notes.txt")).enumerate() {
        let f: Vec<&str> = l.splitn(4, '|').collect();
        assert_eq!(f.len(), 4, "{l}");
        let (id, category, summary, detail) = (f[0], f[1], f[2], f[3]);
        let note = if category == "incident" {
            &mut daily
        } else {
            &mut durable
        };
        write!(
            note,
            "\n## {summary}\nat: 2026-01-15T{:02}:{:02}:00Z · category: {category} · tags: {id}\n\n{detail}\n",
            i / 60,
            i % 60
        )
        .expect("write to a String");
    }
    std::fs::create_dir_all(dir.join("memory")).expect("mkdir memory");
    std::fs::write(dir.join("MEMORY.md"), durable).expect("write MEMORY.md");
    std::fs::write(dir.join("memory/2026-01-15.md"), daily).expect("write daily note");
}

#[test]
fn hybrid_beats_bm25_and_vectors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = common::open(tmp.path());
    write_notes(tmp.path());
    let report = m.sync().expect("sync");
    assert_eq!(report.embedded, 205, "{report:?}");
    let queries: Vec<(HashSet<String>, String)> = lines(include_str!("data/labelled-queries.txt"))
        .map(|l| {
            let (ids, q) = l.split_once('|').expect("ids|query");
            (ids.split(',').map(str::to_string).collect(), q.to_string())
        })
        .collect();
    assert!(queries.len() >= 50);
    let mut totals = Vec::new();
    for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
        let mut halves = [0.0; 2];
        let mut misses = Vec::new();
        for (i, (relevant, q)) in queries.iter().enumerate() {
            let found: HashSet<String> = m
                .search(q, mode, 5)
                .expect("search")
                .iter()
                .filter_map(|c| {
                    c.text
                        .split("tags: ")
                        .nth(1)
                        .map(|t| t.lines().next().unwrap_or("").to_string())
                })
                .collect();
            let hit = relevant.intersection(&found).count() as f64 / relevant.len() as f64;
            halves[i % 2] += hit;
            if hit < 1.0 {
                misses.push(q.as_str());
            }
        }
        let half = queries.len().div_ceil(2) as f64;
        let r = (halves[0] + halves[1]) / queries.len() as f64;
        println!(
            "recall@5 {mode:?}: {r:.3} (even {:.3}, odd {:.3}); not all found: {misses:?}",
            halves[0] / half,
            halves[1] / (queries.len() as f64 - half)
        );
        totals.push(r);
    }
    let (bm25, vector, hybrid) = (totals[0], totals[1], totals[2]);
    assert!(
        bm25 > 0.3 && vector > 0.3,
        "a ranking is broken: {totals:?}"
    );
    assert!(
        hybrid > bm25 && hybrid > vector,
        "hybrid {hybrid:.3} must beat BM25 {bm25:.3} and vectors {vector:.3}"
    );
}

/// The labelled notes stored through `/memory/store`'s path (today's daily note, a metadata
/// line with the time of writing) rank like the hand-written ones: the time of writing is not
/// part of what is embedded, so two stores of the same words give the same vector.
#[test]
fn stored_notes_embed_like_written_ones() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let (ma, mb) = (common::open(a.path()), common::open(b.path()));
    let req = StoreRequest {
        summary: "Disk full on /var from journald".into(),
        detail: "Journal grew to 38 GB on db-2.".into(),
        category: Some("incident".into()),
        tags: vec!["n003".into()],
        durable: true,
    };
    let ra = ma.store(&req).expect("store");
    // The next whole second, so the two `at:` lines differ.
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    let t0 = secs();
    while secs() == t0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rb = mb.store(&req).expect("store");
    assert_ne!(ra.at, rb.at);
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("MEMORY.md")).expect("read");
    assert_ne!(read(a.path()), read(b.path()));
    let sim = |m: &osmoda_memory::Memory| {
        m.recall(&osmoda_memory::RecallRequest {
            query: "the logs filled up the disk".into(),
            max_results: Some(1),
            timeframe: None,
        })
        .expect("recall")
        .results[0]
            .similarity
    };
    assert_eq!(sim(&ma), sim(&mb));
}

/// Queries about nothing the notes hold: gibberish, words of no note, questions from other
/// worlds. Written for this test, like the labelled queries.
const NONSENSE: &[&str] = &[
    "asdf qwer zxcv",
    "xkq vrrp lmnop zzt",
    "purple elephant juggling bananas",
    "lorem ipsum dolor sit amet",
    "recipe for grandma's apple pie",
    "who won the football world cup in 1998",
    "how many legs does a spider have",
    "best beaches in portugal for surfing",
    "translate good morning into japanese",
    "the plot of the second harry potter book",
    "knitting pattern for a wool scarf",
    "what is the capital of australia",
    "banana",
    "hello",
    "?!",
    "my cat likes to sleep on the sofa",
    "chords of a song in g major",
    "how tall is mount everest",
    "tips for growing tomatoes on a balcony",
    "a poem about the sea at night",
];

/// The relevance rule (issue 17 review finding 7): a chunk is recalled when its similarity
/// reaches [`osmoda_memory::MIN_SIMILARITY`] or it holds at least half of the query's words.
/// Measured on the labelled set (both distributions printed): 49 of the 50 labelled queries
/// keep their relevant note, and no nonsense query gets anything (8 of 20 did at 0.2).
#[test]
fn the_relevance_rule_keeps_the_labelled_set_and_drops_nonsense() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_notes(tmp.path());
    let e: std::sync::Arc<dyn osmoda_memory::Embedder> = common::model();
    let mut opts = osmoda_memory::Options::new(tmp.path());
    // The threshold in force is the in-process model's measured one.
    let threshold = e
        .min_similarity()
        .expect("all-MiniLM-L6-v2 has a measured threshold");
    assert_eq!(threshold, osmoda_memory::MIN_SIMILARITY);
    opts.min_similarity = Some(-1.0);
    let m = osmoda_memory::Memory::open(opts, Some(e), None).expect("open");
    let recall = |q: &str| {
        m.recall(&osmoda_memory::RecallRequest {
            query: q.into(),
            max_results: Some(5),
            timeframe: None,
        })
        .expect("recall")
        .results
    };
    let kept = |h: &osmoda_memory::RecallHit| {
        h.keyword_match || h.similarity.is_some_and(|s| s >= threshold)
    };
    // (best similarity of a relevant note in the top 5, whether the rule keeps it, query)
    let mut labelled = Vec::new();
    for l in lines(include_str!("data/labelled-queries.txt")) {
        let (ids, q) = l.split_once('|').expect("ids|query");
        let hits = recall(q);
        let relevant: Vec<_> = hits
            .iter()
            .filter(|h| {
                ids.split(',')
                    .any(|id| h.text.contains(&format!("tags: {id}")))
            })
            .collect();
        if relevant.is_empty() {
            continue;
        }
        let best = relevant
            .iter()
            .filter_map(|h| h.similarity)
            .fold(f32::NEG_INFINITY, f32::max);
        labelled.push((best, relevant.iter().any(|h| kept(h)), q.to_string()));
    }
    let mut nonsense = Vec::new();
    for q in NONSENSE {
        let hits = recall(q);
        let best = hits
            .iter()
            .filter_map(|h| h.similarity)
            .fold(f32::NEG_INFINITY, f32::max);
        nonsense.push((best, hits.iter().filter(|h| kept(h)).count(), q.to_string()));
    }
    labelled.sort_by(|a, b| a.0.total_cmp(&b.0));
    nonsense.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!(
        "labelled queries (best relevant similarity, kept, query), lowest first: {labelled:?}"
    );
    println!("nonsense queries (best similarity, chunks kept, query), highest first: {nonsense:?}");
    let at_old = nonsense.iter().filter(|n| n.0 >= 0.2).count();
    println!(
        "threshold {threshold}: {}/{} labelled queries keep their relevant note; {} of {} nonsense queries got a chunk at 0.2, {} now",
        labelled.iter().filter(|l| l.1).count(),
        labelled.len(),
        at_old,
        nonsense.len(),
        nonsense.iter().filter(|n| n.1 > 0).count()
    );
    assert!(labelled.len() >= 45, "{labelled:?}");
    // The rule's price, measured: "how do I get paged when something critical breaks" (its
    // note at 0.232, no word of the query in it) is dropped, with 8 of 20 nonsense queries.
    let lost: Vec<_> = labelled.iter().filter(|l| !l.1).collect();
    assert!(lost.len() <= 1, "relevant notes dropped: {lost:?}");
    let admitted: Vec<_> = nonsense.iter().filter(|n| n.1 > 0).collect();
    assert!(admitted.is_empty(), "nonsense recalled: {admitted:?}");
}
