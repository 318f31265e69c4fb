//! The on-disk spool: one fsync'ed file per event, named by its zero-padded sequence number.
//!
//! Layout of a spool directory: `stream` (random stream id), `next_seq` (the next sequence number),
//! `00000000000000000042.json` (one pending event each, the exact body to POST), `rejected/`
//! (events the server refused as malformed, with a `.reason` file each) and `.lock`.

use crate::ClientError;
use serde_json::{json, Value};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the directory holding refused events.
pub const REJECTED_DIR: &str = "rejected";

/// A spool directory opened by one reporter.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    stream: String,
    next_seq: Mutex<u64>,
    set_aside: Option<String>,
}

fn io_ctx(context: String) -> impl FnOnce(std::io::Error) -> ClientError {
    move |e| ClientError::spool(context, e)
}

/// Writes `bytes` to `dir/name` via a fsync'ed temp file and a rename (dir not synced).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The file name of the event with sequence number `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The sequence number of a spool file name, if it is one.
fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The stream id and the stored counter (creating a new stream when there is none), or what
/// is wrong with them (`Ok(Err(..))`) when either does not parse.
fn read_stream_state(dir: &Path) -> Result<Result<(String, u64), String>, ClientError> {
    let stream = match fs::read_to_string(dir.join("stream")) {
        Ok(s) => {
            let s = s.trim().to_owned();
            if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Err(format!("stream id {s:?} is not 32 hex digits")));
            }
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).map_err(|e| {
                ClientError::spool(
                    "generating a stream id",
                    std::io::Error::other(e.to_string()),
                )
            })?;
            let s = hex::encode(id);
            write_atomic(dir, "stream", s.as_bytes())
                .map_err(io_ctx("writing the stream id".into()))?;
            sync_dir(dir).map_err(io_ctx(format!("syncing {}", dir.display())))?;
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Ok(Err("the stream id is not text".into()))
        }
        Err(e) => return Err(ClientError::spool("reading the stream id", e)),
    };
    let stored = match fs::read_to_string(dir.join("next_seq")) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => return Ok(Err(format!("next_seq {:?} is not a number", s.trim()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Ok(Err("next_seq is not text".into()))
        }
        Err(e) => return Err(ClientError::spool("reading next_seq", e)),
    };
    Ok(Ok((stream, stored)))
}

impl Spool {
    /// Opens or initialises the spool in `dir` (which must already exist and be locked by us).
    pub(crate) fn open(dir: &Path) -> Result<Spool, ClientError> {
        fs::create_dir_all(dir.join(REJECTED_DIR))
            .map_err(io_ctx(format!("creating {}", dir.display())))?;
        // Temp files are leftovers of a crash mid-write: their events were never acknowledged.
        for entry in fs::read_dir(dir).map_err(io_ctx(format!("listing {}", dir.display())))? {
            let entry = entry.map_err(io_ctx(format!("listing {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(entry.path()).map_err(io_ctx(format!("removing stale {name}")))?;
            }
        }
        // A stream id or counter that does not parse is set aside (kept in `rejected/`) and a
        // new stream begins: the spooled files carry their own dedup keys, and a new stream
        // can never repeat a key agentd already holds, so nothing is lost or suppressed.
        let (stream, stored, set_aside) = match read_stream_state(dir)? {
            Ok((stream, stored)) => (stream, stored, None),
            Err(problem) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                for name in ["stream", "next_seq"] {
                    let from = dir.join(name);
                    if from.exists() {
                        let to = dir.join(REJECTED_DIR).join(format!("{name}.{stamp}"));
                        fs::rename(&from, &to)
                            .map_err(io_ctx(format!("setting aside {}", from.display())))?;
                    }
                }
                let note = format!(
                    "{problem}; set aside in {REJECTED_DIR}/ (suffix .{stamp}) and a new stream begun"
                );
                tracing::warn!(spool = %dir.display(), "{note}");
                let (stream, stored) =
                    read_stream_state(dir)?.map_err(ClientError::SpoolCorrupt)?;
                (stream, stored, Some(note))
            }
        };
        let spool = Spool {
            dir: dir.to_owned(),
            stream,
            next_seq: Mutex::new(0),
            set_aside,
        };
        let after_files = spool.list()?.last().map_or(1, |(seq, _)| seq + 1);
        *spool.lock_seq() = stored.max(after_files).max(1);
        Ok(spool)
    }

    fn lock_seq(&self) -> std::sync::MutexGuard<'_, u64> {
        // The counter is a plain integer: a panic elsewhere cannot leave it half-updated.
        self.next_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What was set aside when the spool was opened (an unreadable stream id or counter).
    pub(crate) fn set_aside(&self) -> Option<&str> {
        self.set_aside.as_deref()
    }

    /// The stream id of this spool.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// The spool directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably stores one event and returns its sequence number. `action` is the label of the
    /// request the event is recorded because of (sent as the body's `action`).
    ///
    /// The counter is persisted before the event file, so a crash in between only skips a number;
    /// a sequence number is never reused for a different event.
    pub(crate) fn append(
        &self,
        daemon: &str,
        kind: &str,
        payload: &Value,
        action: Option<&str>,
    ) -> Result<u64, ClientError> {
        let mut next = self.lock_seq();
        let seq = *next;
        let mut body = json!({
            "type": kind,
            "daemon": daemon,
            "payload": payload,
            "dedup": { "stream": self.stream, "seq": seq },
        });
        if let Some(a) = action {
            body["action"] = json!(a);
        }
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ClientError::InvalidEvent(format!("payload: {e}")))?;
        write_atomic(&self.dir, "next_seq", (seq + 1).to_string().as_bytes())
            .map_err(io_ctx("persisting next_seq".into()))?;
        *next = seq + 1;
        let name = file_name(seq);
        write_atomic(&self.dir, &name, &bytes).map_err(io_ctx(format!("writing {name}")))?;
        if let Err(e) = sync_dir(&self.dir) {
            // Not known to be durable: withdraw it so that an error really means "not spooled".
            let _ = fs::remove_file(self.dir.join(&name));
            return Err(ClientError::spool(
                format!("syncing {}", self.dir.display()),
                e,
            ));
        }
        Ok(seq)
    }

    /// Pending events as (seq, path), in sequence order.
    pub(crate) fn list(&self) -> Result<Vec<(u64, PathBuf)>, ClientError> {
        let ctx = || format!("listing {}", self.dir.display());
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_ctx(ctx()))? {
            let entry = entry.map_err(io_ctx(ctx()))?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_name) {
                out.push((seq, entry.path()));
            }
        }
        out.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(out)
    }

    /// Moves a refused event to `rejected/` with a `.reason` file next to it.
    pub(crate) fn reject(&self, seq: u64, reason: &str) -> Result<(), ClientError> {
        let name = file_name(seq);
        let rejected = self.dir.join(REJECTED_DIR);
        fs::write(rejected.join(format!("{name}.reason")), reason)
            .map_err(io_ctx(format!("writing reason for {name}")))?;
        fs::rename(self.dir.join(&name), rejected.join(&name))
            .map_err(io_ctx(format!("moving {name} to rejected/")))?;
        Ok(())
    }

    /// Deletes a delivered event. Already gone is fine (a concurrent flush delivered it).
    pub(crate) fn remove(&self, seq: u64) -> Result<(), ClientError> {
        match fs::remove_file(self.dir.join(file_name(seq))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClientError::spool(
                format!("deleting delivered {}", file_name(seq)),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42), "00000000000000000042.json");
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "42.json",
            ".00000000000000000042.json.tmp",
            "00000000000000000042.txt",
            "next_seq",
            "0000000000000000004x.json",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn append_persists_counter_and_files() -> Result<(), ClientError> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::spool("tempdir", e))?;
        let spool = Spool::open(dir.path())?;
        assert_eq!(spool.append("d", "k", &json!({"a": 1}), None)?, 1);
        assert_eq!(
            spool.append("d", "k", &json!(null), Some("routine-run.7"))?,
            2
        );
        let stream = spool.stream().to_owned();
        // The label of the request an event is recorded because of travels in the body.
        let body = |seq| -> Result<Value, ClientError> {
            let bytes = fs::read(dir.path().join(file_name(seq)))
                .map_err(|e| ClientError::spool("read", e))?;
            serde_json::from_slice(&bytes).map_err(|e| ClientError::InvalidEvent(e.to_string()))
        };
        assert_eq!(body(1)?.get("action"), None);
        assert_eq!(body(2)?["action"], "routine-run.7");
        spool.remove(1)?;
        spool.remove(2)?;
        spool.remove(2)?;
        drop(spool);
        // Every file delivered and deleted: the counter file still continues the sequence.
        let spool = Spool::open(dir.path())?;
        assert_eq!(spool.stream(), stream);
        assert_eq!(spool.append("d", "k", &json!(1), None)?, 3);
        let listed: Vec<u64> = spool.list()?.into_iter().map(|(s, _)| s).collect();
        assert_eq!(listed, vec![3]);
        Ok(())
    }

    #[test]
    fn unreadable_stream_state_is_set_aside_and_a_new_stream_begins() -> Result<(), ClientError> {
        let w = |p: std::path::PathBuf, b: &[u8]| {
            fs::write(p, b).map_err(|e| ClientError::spool("w", e))
        };
        let old = "0123456789abcdef0123456789abcdef";
        for (stream, next_seq, problem) in [
            (&b"not-hex"[..], &b"3"[..], "is not 32 hex digits"),
            (
                old.as_bytes(),
                &b"many"[..],
                "next_seq \"many\" is not a number",
            ),
            (old.as_bytes(), &b"\xff\xfe"[..], "next_seq is not text"),
            (&b"\xff"[..], &b"7"[..], "the stream id is not text"),
        ] {
            let dir = tempfile::tempdir().map_err(|e| ClientError::spool("tempdir", e))?;
            w(dir.path().join("stream"), stream)?;
            w(dir.path().join("next_seq"), next_seq)?;
            // An event of the old stream waiting in the spool keeps its own key.
            fs::create_dir_all(dir.path().join(REJECTED_DIR))
                .map_err(|e| ClientError::spool("d", e))?;
            w(
                dir.path().join(file_name(5)),
                br#"{"dedup":{"stream":"0123456789abcdef0123456789abcdef","seq":5}}"#,
            )?;
            let spool = Spool::open(dir.path())?;
            let note = spool.set_aside().unwrap_or_default().to_string();
            assert!(note.contains(problem), "{note}");
            assert_ne!(spool.stream(), old);
            assert_eq!(spool.stream().len(), 32);
            assert_eq!(spool.append("d", "k", &json!(1), None)?, 6);
            let kept: Vec<String> = fs::read_dir(dir.path().join(REJECTED_DIR))
                .map_err(|e| ClientError::spool("r", e))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(kept.len(), 2, "{kept:?}");
            let back =
                fs::read(dir.path().join(file_name(5))).map_err(|e| ClientError::spool("r", e))?;
            assert!(String::from_utf8_lossy(&back).contains(old));
            drop(spool);
            assert!(Spool::open(dir.path())?.set_aside().is_none());
        }
        Ok(())
    }
}
