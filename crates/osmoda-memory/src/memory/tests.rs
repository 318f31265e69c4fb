//! Unit tests of the memory facade: the work a write does, locks, dates, odd places, watches.

use super::*;
use crate::index::Work;

/// A stand-in model: 8 numbers from the SHA-256 of the text (no model cost).
pub(crate) struct Hash8;
impl Embedder for Hash8 {
    fn id(&self) -> String {
        "hash8".into()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let h = Sha256::digest(t.as_bytes());
                let mut v: Vec<f32> = h[..8].iter().map(|b| f32::from(*b) - 127.5).collect();
                crate::embed::normalize(&mut v);
                v
            })
            .collect())
    }
}

/// `days` daily notes of `per_day` sections each, as osModa writes them.
fn write_days(dir: &std::path::Path, first: u32, days: u32, per_day: usize) {
    std::fs::create_dir_all(dir.join("memory")).expect("mkdir");
    for d in first..first + days {
        let name = format!("2025-{:02}-{:02}", 1 + d / 28, 1 + d % 28);
        let mut s = format!("# {name}\n");
        for i in 0..per_day {
            s.push_str(&format!(
                "\n## service.failed (unit{i}.service)\nat: {name}T10:{:02}:00Z · source: ledger · host: web-{d}\n\nunit{i} failed on web-{d}: the disk was full ({d}/{i}).\n",
                i % 60
            ));
        }
        std::fs::write(dir.join(format!("memory/{name}.md")), s).expect("write");
    }
}

/// The work of five ingests into one note of 40 sections and a hand edit of its first
/// section, in a collection of `others` more daily notes of 100 sections each.
fn work_of_writes(others: u32) -> Work {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_days(tmp.path(), 0, 1, 40);
    write_days(tmp.path(), 1, others, 100);
    let e: Arc<dyn Embedder> = Arc::new(Hash8);
    let m = Memory::open(Options::new(tmp.path()), Some(e), None).expect("open");
    assert_eq!(
        m.health().expect("health").collection_size,
        40 + 100 * u64::from(others)
    );
    lock(&m.index).count_work();
    let before = lock(&m.index).work();
    for i in 0..5 {
        let ev: IngestEvent = serde_json::from_value(serde_json::json!({
            "type": "service.failed", "text": format!("nginx failed ({i})"),
            "ts": "2025-01-01T12:00:00Z", "host": "web-0",
        }))
        .expect("event");
        assert_eq!(m.ingest(&ev).expect("ingest").path, "memory/2025-01-01.md");
    }
    let note = "memory/2025-01-01.md";
    let path = tmp.path().join(note);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replacen("the disk was full (0/0)", "edited by hand", 1),
    )
    .expect("edit");
    let r = m.sync_paths(&[note.to_string()]).expect("sync");
    assert_eq!((r.files_changed, r.embedded), (1, 1));
    let after = lock(&m.index).work();
    Work {
        sql_steps: after.sql_steps - before.sql_steps,
        vector_rows: after.vector_rows - before.vector_rows,
    }
}

/// A write costs what its note holds, not what the collection holds: the same writes
/// into the same note do the same work beside 2 or 40 other notes (200 or 4,000 chunks).
/// Before this rule, finding the chunks without a vector scanned every row and a removed
/// vector compacted the whole in-memory copy: ~1.1 s per ingest at 100k chunks.
#[test]
fn a_write_costs_what_its_note_holds_not_the_collection() {
    let small = work_of_writes(2);
    let big = work_of_writes(40);
    assert_eq!(small.vector_rows, big.vector_rows, "{small:?} {big:?}");
    assert!(small.sql_steps > 0);
    // B-tree descents grow with the log of the size; allow 10 %.
    assert!(
        big.sql_steps <= small.sql_steps + small.sql_steps / 10,
        "{small:?} {big:?}"
    );
}

fn open_hash8(dir: &std::path::Path) -> Memory {
    let e: Arc<dyn Embedder> = Arc::new(Hash8);
    Memory::open(Options::new(dir), Some(e), None).expect("open")
}

pub(super) fn store_req(summary: &str, detail: &str, durable: bool) -> StoreRequest {
    StoreRequest {
        summary: summary.into(),
        detail: detail.into(),
        category: None,
        tags: vec![],
        durable,
    }
}

/// A body cannot forge a heading for this crate nor for any CommonMark reader (issue 17
/// review finding 3): a bare `\r` ends a line, setext underlines are escaped too, and a code
/// fence left open is closed so it cannot hide the sections after it.
#[test]
fn a_body_never_forges_or_hides_a_section() {
    for (body, want) in [
        ("a\r## forged", "a\n\\## forged"),
        ("a\r\n# forged\r\nb", "a\n\\# forged\nb"),
        ("   ### x", "\\### x"),
        ("title\n===", "title\n\\==="),
        ("title\r---", "title\n\\---"),
        ("- item\n-- not alone", "- item\n-- not alone"),
        ("```sh\nls\n```\nafter", "```sh\nls\n```\nafter"),
        ("```\nopen fence", "```\nopen fence\n```"),
        ("~~~\n```\nstill open", "~~~\n```\nstill open\n~~~"),
        ("#tag at the start", "\\#tag at the start"),
    ] {
        assert_eq!(escape_body(body), want, "{body:?}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = open_hash8(tmp.path());
    m.store(&store_req("real", "x\r## forged\rmore\n===\n```", true))
        .expect("store");
    let text = std::fs::read_to_string(tmp.path().join("MEMORY.md")).expect("read");
    let headings: Vec<&str> = split_lines(&text)
        .into_iter()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(headings, ["# Memory", "## real"], "{text:?}");
    let chunks = lock(&m.index).dates_by_text("MEMORY.md").expect("chunks");
    assert_eq!(chunks.len(), 1, "{chunks:?}");
}

/// Hand-written sections of MEMORY.md without a date keep the one they were first seen with
/// (issue 17 review finding 11): editing one fact does not make every other one recent.
#[test]
fn undated_durable_sections_keep_the_date_they_were_first_seen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("MEMORY.md");
    let set_mtime = |secs: u64| {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .expect("mtime");
    };
    std::fs::write(
        &path,
        "# Memory\n\n## backups\nnightly at 02:00\n\n## units\nmetric\n",
    )
    .expect("write");
    set_mtime(1_000_000);
    let m = open_hash8(tmp.path());
    let dates = |m: &Memory| {
        let mut d: Vec<(String, i64)> = lock(&m.index)
            .dates_by_text("MEMORY.md")
            .expect("dates")
            .into_iter()
            .collect();
        d.sort();
        d
    };
    assert_eq!(
        dates(&m),
        [
            ("## backups\nnightly at 02:00".to_string(), 1_000_000),
            ("## units\nmetric".to_string(), 1_000_000)
        ]
    );
    // A person adds a fact and rewords another, a day later.
    std::fs::write(
        &path,
        "# Memory\n\n## backups\nnightly at 02:00\n\n## units\nmetric, Celsius\n\n## vpn\nWireGuard\n",
    )
    .expect("write");
    set_mtime(1_086_400);
    m.sync_paths(&["MEMORY.md".to_string()]).expect("sync");
    assert_eq!(
        dates(&m),
        [
            ("## backups\nnightly at 02:00".to_string(), 1_000_000),
            ("## units\nmetric, Celsius".to_string(), 1_086_400),
            ("## vpn\nWireGuard".to_string(), 1_086_400)
        ]
    );
    // A rebuild from the files alone has no memory of first sightings: the file's mtime.
    m.reindex().expect("reindex");
    assert!(dates(&m).iter().all(|(_, ts)| *ts == 1_086_400));
}

/// Something other than a note where a note or the daily dir belongs is a clear refusal that
/// names it, with nothing written anywhere (issue 17 review finding 12; agentd answers 409).
#[test]
fn a_place_that_is_not_a_note_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = open_hash8(tmp.path());
    std::fs::create_dir(tmp.path().join("MEMORY.md")).expect("mkdir");
    let e = m
        .store(&store_req("fact", "", true))
        .expect_err("a directory");
    assert!(
        matches!(&e, MemoryError::NotANote { path, .. } if path == "MEMORY.md"),
        "{e}"
    );
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // The daily dir a file, then a link to another directory.
    std::fs::write(tmp.path().join("memory"), "x").expect("file");
    let e = m.store(&store_req("event", "", false)).expect_err("a file");
    assert!(
        matches!(&e, MemoryError::NotANote { path, .. } if path == "memory"),
        "{e}"
    );
    std::fs::remove_file(tmp.path().join("memory")).expect("rm");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join("memory")).expect("link");
    let e = m.store(&store_req("event", "", false)).expect_err("a link");
    assert!(
        matches!(&e, MemoryError::NotANote { path, .. } if path == "memory"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).expect("ls").count(),
        0,
        "nothing written through the link"
    );
}

/// An embedder that holds every batch holding "bulk" until released.
struct Gated {
    open: Arc<(Mutex<bool>, Condvar)>,
}
impl Embedder for Gated {
    fn id(&self) -> String {
        "hash8".into()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.iter().any(|t| t.contains("bulk")) {
            let (m, cv) = &*self.open;
            let mut g = lock(m);
            while !*g {
                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        }
        Hash8.embed(texts)
    }
}

/// A huge hand-written note is embedded outside the writer lock (issue 17 review finding 5):
/// while its thousands of chunks are embedded, a store goes through at once, its note found
/// by keyword (and embedded by the thread already embedding).
#[test]
fn a_long_embedding_never_holds_the_writers_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let open = Arc::new((Mutex::new(true), Condvar::new()));
    let e: Arc<dyn Embedder> = Arc::new(Gated { open: open.clone() });
    let m = Arc::new(Memory::open(Options::new(tmp.path()), Some(e), None).expect("open"));
    *lock(&open.0) = false;
    let mut big = String::from("# Memory\n");
    for i in 0..2_000 {
        big.push_str(&format!(
            "\n## bulk fact {i}\nsomething to remember, number {i}\n"
        ));
    }
    std::fs::write(tmp.path().join("MEMORY.md"), big).expect("write");
    let m2 = m.clone();
    let syncing = std::thread::spawn(move || m2.sync().expect("sync"));
    // Wait until the big note is indexed and its embedding has begun (held by the gate).
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.health().expect("health").pending_vectors < 2_000 {
        assert!(Instant::now() < deadline, "the big note was never indexed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let m3 = m.clone();
    let storing = std::thread::spawn(move || {
        let r = m3.store(&store_req(
            "zebra-7 VPN uses WireGuard",
            "port 51820",
            false,
        ));
        tx.send(r.map(|r| r.path)).expect("send");
    });
    let stored = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the store waited for the embedding of another note");
    assert!(stored.expect("store").starts_with("memory/"));
    let hits = m
        .recall(&RecallRequest {
            query: "zebra-7".into(),
            max_results: None,
            timeframe: None,
        })
        .expect("recall");
    assert!(
        hits.results.iter().any(|h| h.text.contains("51820")),
        "{hits:?}"
    );
    assert!(hits.warning.is_some_and(|w| w.contains("not embedded yet")));
    *lock(&open.0) = true;
    open.1.notify_all();
    storing.join().expect("store thread");
    let report = syncing.join().expect("sync thread");
    assert_eq!(
        report.embedded, 2_001,
        "the embedding thread took the stored note too"
    );
    assert_eq!(m.health().expect("health").pending_vectors, 0);
}

/// Wait (on the watcher's sync signal) until `found` holds, at most 60 s.
fn until(m: &Memory, what: &str, found: impl Fn(&Memory) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut count = m.sync_count();
    while !found(m) {
        assert!(Instant::now() < deadline, "{what}: never followed");
        count = m.wait_sync(count, Duration::from_secs(2));
    }
}

fn finds(m: &Memory, word: &str) -> bool {
    m.recall(&RecallRequest {
        query: word.into(),
        max_results: None,
        timeframe: None,
    })
    .expect("recall")
    .results
    .iter()
    .any(|h| h.text.contains(word))
}

/// The watch follows a directory, not a name (issue 17 review finding 12): the daily dir and
/// the memory dir itself removed and made again (a restore, `rm -r` + copy) are still
/// followed, the notes written into them indexed.
#[test]
fn recreated_directories_are_still_watched() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("memory-root");
    // Keyword recall: what is indexed is what is found.
    let m = Arc::new(Memory::open(Options::new(&root), None, None).expect("open"));
    let _w = m.watch().expect("watch");
    std::fs::create_dir(root.join("memory")).expect("mkdir");
    std::fs::write(
        root.join("memory/2025-01-01.md"),
        "# d\n\n## zebra1 first\nx\n",
    )
    .expect("write");
    until(&m, "a note in a new daily dir", |m| finds(m, "zebra1"));
    std::fs::remove_dir_all(root.join("memory")).expect("rm -r");
    until(&m, "the daily dir removed", |m| !finds(m, "zebra1"));
    std::fs::create_dir(root.join("memory")).expect("mkdir");
    std::fs::write(
        root.join("memory/2025-01-02.md"),
        "# d\n\n## zebra2 second\nx\n",
    )
    .expect("write");
    until(&m, "a note in the recreated daily dir", |m| {
        finds(m, "zebra2")
    });
    // The memory dir itself, gone and back.
    std::fs::remove_dir_all(&root).expect("rm -r root");
    until(&m, "the memory dir removed", |m| !finds(m, "zebra2"));
    std::fs::create_dir_all(root.join("memory")).expect("mkdir root");
    std::fs::write(root.join("MEMORY.md"), "# Memory\n\n## zebra3 third\nx\n").expect("write");
    until(&m, "a note in the recreated memory dir", |m| {
        finds(m, "zebra3")
    });
    std::fs::write(
        root.join("memory/2025-01-03.md"),
        "# d\n\n## zebra4 fourth\nx\n",
    )
    .expect("write");
    until(&m, "a later note there", |m| finds(m, "zebra4"));
}

/// Today's note, written by hand with sections until it holds `bytes`.
fn fill_today(dir: &std::path::Path, bytes: u64) -> (String, String) {
    let m = Notes::new(dir);
    let p = m.daily_path(OffsetDateTime::now_utc().date());
    let date = p.file_stem().expect("stem").to_string_lossy().into_owned();
    let mut s = format!("# {date}\n");
    let mut i = 0;
    while (s.len() as u64) < bytes {
        s.push_str(&format!(
            "\n## service.failed (unit{i}.service)\nat: {date}T01:00:00Z · source: ledger · host: web-1\n\nunit{i} failed: the disk was full ({i}). {}\n", "journald kept its logs. ".repeat(30)
        ));
        i += 1;
    }
    std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
    std::fs::write(&p, &s).expect("write");
    (date, s)
}

/// The work of one store into today's note, in a memory whose today's note holds `bytes`.
fn work_of_a_store(bytes: u64) -> (Work, StoreReceipt, String, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (date, s) = fill_today(tmp.path(), bytes);
    let m = open_hash8(tmp.path());
    lock(&m.index).count_work();
    let before = lock(&m.index).work();
    let r = m
        .store(&store_req(
            "nginx down on web-1",
            "certificate expired",
            false,
        ))
        .expect("store");
    let after = lock(&m.index).work();
    assert!(
        finds(&m, "certificate"),
        "the stored note is found in {}",
        r.path
    );
    let held = std::fs::read_to_string(tmp.path().join(format!("memory/{date}.md"))).expect("read");
    let w = Work {
        sql_steps: after.sql_steps - before.sql_steps,
        vector_rows: after.vector_rows - before.vector_rows,
    };
    (w, r, date, if held == s { String::new() } else { held })
}

/// A write's work is bounded by a note's size cap, not by what a day (or a caller storing in
/// a loop) has written (review memory11 finding 4): every store rewrote and re-indexed its
/// whole day's note, so n stores of a day cost O(n²) and one store into a note of 2 MiB read
/// its ~10,000 chunks and vectors back. A full note takes no more sections: the day goes on
/// in `memory/YYYY-MM-DD-2.md`; a full `MEMORY.md` refuses a durable note, writing nothing.
#[test]
fn a_full_note_takes_no_more_and_a_write_stays_small() {
    let (small, r, date, _) = work_of_a_store(2_000);
    assert_eq!(r.path, format!("memory/{date}.md"));
    let (big, r, date, changed) = work_of_a_store(NOTE_CAP);
    assert_eq!(r.path, format!("memory/{date}-2.md"));
    assert!(changed.is_empty(), "the full note was written to");
    assert!(
        big.sql_steps < small.sql_steps * 2,
        "a store beside a full note: {big:?}; beside a small one: {small:?}"
    );
    // A chunk of the second part is dated and labelled like the day's note.
    let c = crate::chunk::chunk_note(&r.path, "## x\nbody", 0);
    assert_eq!(c[0].enriched(), format!("[{date}] ## x\nbody"));
    // MEMORY.md at the cap: refused by name, nothing written.
    let tmp = tempfile::tempdir().expect("tempdir");
    let full = format!("# Memory\n\n## facts\n{}\n", "x".repeat(NOTE_CAP as usize));
    std::fs::write(tmp.path().join("MEMORY.md"), &full).expect("write");
    let m = open_hash8(tmp.path());
    let e = m
        .store(&store_req("prefers metric units", "", true))
        .expect_err("full");
    assert!(matches!(e, MemoryError::NoteFull { .. }), "{e}");
    assert!(e.to_string().starts_with("MEMORY.md holds"), "{e}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("MEMORY.md")).expect("read"),
        full
    );
}
