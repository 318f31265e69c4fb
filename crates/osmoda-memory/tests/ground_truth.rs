//! Markdown is the ground truth: the index is rebuilt from it, follows hand edits, survives
//! corruption and model changes; bad input writes nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use osmoda_memory::{Embedder, Memory, MemoryError, Options, RecallRequest, StoreRequest};

fn store(m: &Memory, summary: &str, detail: &str, durable: bool) {
    m.store(&StoreRequest {
        summary: summary.into(),
        detail: detail.into(),
        category: Some("ops".into()),
        tags: vec!["test".into()],
        durable,
    })
    .expect("store");
}

fn recall(m: &Memory, q: &str) -> Vec<(String, u32, String)> {
    m.recall(&RecallRequest {
        query: q.into(),
        max_results: Some(5),
        timeframe: None,
    })
    .expect("recall")
    .results
    .into_iter()
    .map(|h| (h.path, h.line_start, h.text))
    .collect()
}

fn seed(m: &Memory) {
    store(
        m,
        "nginx TLS certificate expired",
        "web-1 stopped serving https; renewed with certbot and reloaded nginx",
        false,
    );
    store(
        m,
        "Postgres backups",
        "pg_dump of the shop database runs nightly at 02:00 to /srv/backup",
        true,
    );
    store(
        m,
        "User prefers metric units",
        "answers in Celsius and kilometres",
        true,
    );
    store(
        m,
        "Disk full on /var",
        "journald filled /var; set SystemMaxUse=500M",
        false,
    );
}

const QUERIES: &[&str] = &[
    "why did the website stop working",
    "database dump schedule",
    "temperature units",
    "journald disk usage",
];

/// A memory that keeps every ranked chunk (no relevance cut): the reindex test compares whole
/// rankings; where the cut falls is `retrieval.rs`'s subject, measured on the labelled set.
/// (With the cut, "why did the website stop working" finds nothing: its note's cosine is
/// 0.346, under `MIN_SIMILARITY` 0.35, and it shares no word with it.)
fn open_uncut(dir: &std::path::Path) -> Memory {
    let e: Arc<dyn Embedder> = common::model();
    let mut o = Options::new(dir);
    o.min_similarity = Some(0.0);
    Memory::open(o, Some(e), None).expect("open memory")
}

#[test]
fn delete_index_reindex_identical_results() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = open_uncut(tmp.path());
    seed(&m);
    let before: Vec<_> = QUERIES.iter().map(|q| recall(&m, q)).collect();
    assert!(before.iter().all(|r| !r.is_empty()), "{before:?}");
    assert!(before[0][0].2.contains("nginx"), "{:?}", before[0]);
    assert!(before[1][0].2.contains("pg_dump"), "{:?}", before[1]);
    let md = std::fs::read_to_string(tmp.path().join("MEMORY.md")).expect("MEMORY.md");
    assert!(
        md.starts_with("# Memory\n\n## Postgres backups\nat: "),
        "{md}"
    );

    std::fs::remove_file(tmp.path().join(".index.sqlite")).expect("rm index");
    m.reindex().expect("reindex");
    let after: Vec<_> = QUERIES.iter().map(|q| recall(&m, q)).collect();
    assert_eq!(before, after);
    // A new process on the same files (no index at all) agrees too.
    drop(m);
    std::fs::remove_file(tmp.path().join(".index.sqlite")).expect("rm index");
    let m = open_uncut(tmp.path());
    assert_eq!(
        before,
        QUERIES.iter().map(|q| recall(&m, q)).collect::<Vec<_>>()
    );
}

#[test]
fn hand_edits_are_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = Arc::new(common::open(tmp.path()));
    seed(&m);
    let _w = m.watch().expect("watch");
    let day = std::fs::read_dir(tmp.path().join("memory"))
        .expect("ls")
        .next()
        .expect("a daily note")
        .expect("entry")
        .path();
    let mut text = std::fs::read_to_string(&day).expect("read");
    text = text.replace(
        "renewed with certbot",
        "renewed with the zebra-7 ACME client",
    );
    text.push_str("\n## Hand-written: the VPN uses WireGuard on port 51820\nadded by a person\n");
    let seen = m.sync_count();
    std::fs::write(&day, &text).expect("edit");
    // Wait (on the watcher's sync signal, not a sleep) until the index reflects the edit.
    let mut count = seen;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        count = m.wait_sync(count, Duration::from_secs(5));
        let hits = recall(&m, "which port does the VPN listen on");
        if hits.first().is_some_and(|h| h.2.contains("51820")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never indexed the edit: {hits:?}"
        );
    }
    assert!(recall(&m, "zebra-7")
        .iter()
        .any(|h| h.2.contains("zebra-7")));
    assert!(
        !recall(&m, "certbot")
            .iter()
            .any(|h| h.2.contains("certbot")),
        "the old text is gone"
    );
    // Deleting a note removes its chunks.
    let seen = m.sync_count();
    std::fs::remove_file(&day).expect("rm");
    let mut count = seen;
    loop {
        count = m.wait_sync(count, Duration::from_secs(5));
        if recall(&m, "WireGuard VPN port")
            .iter()
            .all(|h| !h.2.contains("51820"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deleted note still recalled"
        );
    }
}

#[test]
fn corrupt_index_is_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = common::open(tmp.path());
    seed(&m);
    let before: Vec<_> = QUERIES.iter().map(|q| recall(&m, q)).collect();
    drop(m);
    let idx = tmp.path().join(".index.sqlite");
    for (what, damage) in [
        (
            "garbage",
            Box::new(|p: &std::path::Path| {
                std::fs::write(p, b"this is not a database at all, not even close....")
                    .expect("write")
            }) as Box<dyn Fn(&std::path::Path)>,
        ),
        (
            "torn pages",
            Box::new(|p: &std::path::Path| {
                let mut b = std::fs::read(p).expect("read");
                let n = b.len();
                for x in &mut b[4096.min(n)..n] {
                    *x ^= 0x5a;
                }
                std::fs::write(p, b).expect("write");
            }),
        ),
        (
            "fts out of step",
            Box::new(|p: &std::path::Path| {
                let c = rusqlite::Connection::open(p).expect("open");
                c.execute(
                    "DELETE FROM chunks WHERE id = (SELECT min(id) FROM chunks)",
                    [],
                )
                .expect("delete");
            }),
        ),
    ] {
        damage(&idx);
        let m = common::open(tmp.path());
        let h = m.health().expect("health");
        assert!(h.index_rebuilt.is_some(), "{what}: not detected");
        assert_eq!(
            before,
            QUERIES.iter().map(|q| recall(&m, q)).collect::<Vec<_>>(),
            "{what}"
        );
    }
}

/// An index damaged while the memory is open (a stray writer, a disk error: SQLite reports
/// the damage on the next use) is rebuilt from the notes on that use, not at the next start;
/// the recall that found it answers as before, and health says why.
#[test]
fn an_index_damaged_while_open_is_rebuilt_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = common::open(tmp.path());
    seed(&m);
    let before: Vec<_> = QUERIES.iter().map(|q| recall(&m, q)).collect();
    assert!(m.health().expect("health").index_rebuilt.is_none());
    // The full-text segments overwritten in place, through another connection (so the open
    // one's page cache is no shield).
    let c = rusqlite::Connection::open(tmp.path().join(".index.sqlite")).expect("open");
    c.busy_timeout(Duration::from_secs(10)).expect("busy");
    let n = c
        .execute(
            "UPDATE chunks_fts_data SET block = randomblob(length(block))",
            [],
        )
        .expect("damage");
    assert!(n > 0);
    drop(c);
    assert_eq!(
        before,
        QUERIES.iter().map(|q| recall(&m, q)).collect::<Vec<_>>()
    );
    let why = m.health().expect("health").index_rebuilt.expect("rebuilt");
    assert!(why.contains("damaged while open"), "{why}");
    // A store right after works and is found (the rebuilt index takes writes).
    store(&m, "Grafana moved to port 3300", "after the upgrade", true);
    assert!(recall(&m, "grafana port")
        .iter()
        .any(|h| h.2.contains("3300")));
}

/// Wraps the model under another identity, as a different model would be.
struct Renamed(Arc<osmoda_memory::LocalModel>);
impl Embedder for Renamed {
    fn id(&self) -> String {
        "another-model".into()
    }
    fn embed(&self, t: &[String]) -> osmoda_memory::Result<Vec<Vec<f32>>> {
        self.0.embed(t)
    }
}

#[test]
fn model_change_rebuilds_vectors_never_mixes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = common::open(tmp.path());
    seed(&m);
    drop(m);
    let e: Arc<dyn Embedder> = Arc::new(Renamed(common::model()));
    let m = Memory::open(Options::new(tmp.path()), Some(e), None).expect("open");
    drop(m);
    let c = rusqlite::Connection::open(tmp.path().join(".index.sqlite")).expect("open");
    let models: Vec<Option<String>> = c
        .prepare("SELECT DISTINCT model FROM chunks")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(models, vec![Some("another-model".to_string())]);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = common::open(tmp.path());
    let snapshot = || {
        let mut v: Vec<_> = walk(tmp.path());
        v.sort();
        v
    };
    let before = snapshot();
    let bad_store = [
        StoreRequest {
            summary: String::new(),
            detail: "x".into(),
            category: None,
            tags: vec![],
            durable: false,
        },
        StoreRequest {
            summary: "s".into(),
            detail: "x".repeat(17 * 1024),
            category: None,
            tags: vec![],
            durable: false,
        },
        StoreRequest {
            summary: "two\nlines".into(),
            detail: String::new(),
            category: None,
            tags: vec![],
            durable: true,
        },
        StoreRequest {
            summary: "s".into(),
            detail: String::new(),
            category: Some("no spaces".into()),
            tags: vec![],
            durable: false,
        },
    ];
    for r in &bad_store {
        assert!(matches!(m.store(r), Err(MemoryError::Invalid(_))), "{r:?}");
    }
    for (q, n, tf) in [
        ("", None, None),
        ("   ", None, None),
        ("x", Some(0), None),
        ("x", Some(51), None),
        ("x", None, Some("last tuesday")),
        ("x", None, Some("5m")),
    ] {
        let r = RecallRequest {
            query: q.into(),
            max_results: n,
            timeframe: tf.map(Into::into),
        };
        assert!(
            matches!(m.recall(&r), Err(MemoryError::Invalid(_))),
            "{r:?}"
        );
    }
    assert_eq!(before, snapshot(), "a refused request changed files");
    // A body cannot forge a section.
    store(&m, "real", "line\n## forged heading\n#also", false);
    let hits = m
        .search("forged heading", osmoda_memory::Mode::Bm25, 5)
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].heading, "real");
}

fn walk(p: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).expect("ls").flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if !path.to_string_lossy().contains(".index.sqlite") {
            out.push((
                path.to_string_lossy().into_owned(),
                std::fs::read(&path).expect("read"),
            ));
        }
    }
    out
}

/// The memory dir lies under a writable root: a link planted there must not make recall hand
/// out another file's bytes (issue 17 review finding 1), and the index holding every note's
/// text is the owner's only (finding 2).
#[test]
fn links_and_odd_files_in_the_memory_dir_are_never_read() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("checkpoint.key");
    std::fs::write(&secret, "PRIVATE+KEY+zebra-7-secret-material\n").expect("secret");
    let m = common::open(tmp.path());
    seed(&m);
    let daily = tmp.path().join("memory");
    // A symbolic link, a hard link and a FIFO named like notes; a linked MEMORY.md.
    symlink(&secret, daily.join("2020-01-01.md")).expect("symlink");
    std::fs::hard_link(&secret, daily.join("2020-01-02.md")).expect("hard link");
    let fifo = std::process::Command::new("mkfifo")
        .arg(daily.join("2020-01-03.md"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    let report = m.reindex().expect("reindex");
    let hits = recall(&m, "PRIVATE KEY zebra-7 secret material");
    assert!(
        hits.iter().all(|h| !h.2.contains("zebra-7")),
        "{hits:?} ({report:?})"
    );
    // The durable notes replaced by a link: not read, and a durable store refuses to write
    // through it (the secret stays as it was).
    std::fs::remove_file(tmp.path().join("MEMORY.md")).expect("rm");
    symlink(&secret, tmp.path().join("MEMORY.md")).expect("symlink");
    m.reindex().expect("reindex");
    assert!(recall(&m, "PRIVATE KEY zebra-7")
        .iter()
        .all(|h| !h.2.contains("zebra-7")));
    let err = m
        .store(&StoreRequest {
            summary: "a durable fact".into(),
            detail: String::new(),
            category: None,
            tags: vec![],
            durable: true,
        })
        .expect_err("a store through a link");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "PRIVATE+KEY+zebra-7-secret-material\n"
    );
    // The daily dir itself a link to another directory: nothing in it is read.
    std::fs::remove_file(tmp.path().join("MEMORY.md")).expect("rm");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        elsewhere.path().join("2021-01-01.md"),
        "# x\n\n## zebra-7 outside\n",
    )
    .expect("note");
    std::fs::rename(&daily, tmp.path().join("memory.old")).expect("mv");
    symlink(elsewhere.path(), &daily).expect("symlink dir");
    m.reindex().expect("reindex");
    assert!(recall(&m, "zebra-7 outside")
        .iter()
        .all(|h| !h.2.contains("zebra-7")));
    // The index and its WAL: owner only.
    for f in [".index.sqlite", ".index.sqlite-wal"] {
        let p = tmp.path().join(f);
        if let Ok(md) = std::fs::metadata(&p) {
            assert_eq!(md.permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
    assert!(tmp.path().join(".index.sqlite").exists());
}

/// An embedder around the real model that holds every batch of more than one text until
/// released: notes stay "pending" while a one-text query is embedded at once.
struct Held {
    inner: Arc<dyn Embedder>,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Embedder for Held {
    fn id(&self) -> String {
        self.inner.id()
    }
    fn min_similarity(&self) -> Option<f32> {
        self.inner.min_similarity()
    }
    fn embed(&self, texts: &[String]) -> osmoda_memory::Result<Vec<Vec<f32>>> {
        if texts.len() > 1 || texts.iter().any(|t| t.contains("zebra")) {
            let (open, cv) = &*self.gate;
            let mut g = open.lock().expect("gate");
            while !*g {
                g = cv.wait(g).expect("gate");
            }
        }
        self.inner.embed(texts)
    }
}

/// The warning of a recall of `q` (`None`: none).
fn warning_of(m: &Memory, q: &str) -> Option<String> {
    m.recall(&RecallRequest {
        query: q.into(),
        max_results: None,
        timeframe: None,
    })
    .expect("recall")
    .warning
}

/// Recall while chunks wait for their vectors says so (issue 17 review finding 10): those
/// chunks rank by keyword alone until embedded.
#[test]
fn recall_says_when_chunks_are_not_embedded_yet() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
    let e: Arc<dyn Embedder> = Arc::new(Held {
        inner: common::model(),
        gate: gate.clone(),
    });
    let m = Arc::new(Memory::open(Options::new(tmp.path()), Some(e), None).expect("open"));
    seed(&m);
    let w = warning_of(&m, "website down");
    assert!(w.is_none(), "{w:?}");
    *gate.0.lock().expect("gate") = false;
    let m2 = m.clone();
    let storing =
        std::thread::spawn(move || store(&m2, "zebra-7 VPN on WireGuard", "port 51820", false));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let warned = loop {
        if let Some(w) = warning_of(&m, "which VPN") {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning while a note waits for its vector"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(warned.contains("not embedded yet"), "{warned}");
    *gate.0.lock().expect("gate") = true;
    gate.1.notify_all();
    storing.join().expect("store");
    let w = warning_of(&m, "which VPN");
    assert!(w.is_none(), "{w:?}");
}
