//! Durable switch sessions: one JSON file per switch, written atomically (temp file, fsync,
//! rename, fsync of the directory) so a `kill -9` at any instant leaves either the old or the new
//! state on disk, never a torn file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::session::SwitchSession;
use crate::error::{Result, WatchError};

/// Where unreadable records are moved, inside `switches/`.
pub const SET_ASIDE: &str = "set-aside";

/// A switch record that could not be read, moved aside for a person.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// The switch id its file name gave.
    pub id: u64,
    /// Where it was.
    pub file: PathBuf,
    /// Where it is kept now.
    pub kept_as: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

/// The `switches/` directory under the state dir.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) `<state_dir>/switches`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(state_dir: &Path) -> Result<Store> {
        let dir = state_dir.join("switches");
        fs::create_dir_all(&dir).map_err(WatchError::io("create", &dir))?;
        Ok(Store { dir })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:010}.json"))
    }

    /// Persists `s` durably; returns only after the data and the rename are on disk.
    ///
    /// # Errors
    /// When writing, syncing or renaming fails (the previous version stays intact).
    pub fn save(&self, s: &SwitchSession) -> Result<()> {
        let path = self.path(s.id);
        let json = serde_json::to_vec_pretty(s)
            .map_err(|e| WatchError::Backend(format!("cannot serialize switch {}: {e}", s.id)))?;
        write_atomic(&path, &json)
    }

    /// Loads one session.
    ///
    /// # Errors
    /// `NotFound` when there is no such switch; `Io`/`Backend` when the file is unreadable.
    pub fn load(&self, id: u64) -> Result<SwitchSession> {
        let path = self.path(id);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WatchError::NotFound(format!("no switch with id {id}")))
            }
            Err(e) => return Err(WatchError::io("read", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            WatchError::Backend(format!("corrupt switch record {}: {e}", path.display()))
        })
    }

    /// All sessions, oldest first.
    ///
    /// # Errors
    /// When the directory or a record cannot be read.
    pub fn all(&self) -> Result<Vec<SwitchSession>> {
        self.ids()?.into_iter().map(|id| self.load(id)).collect()
    }

    /// At most `limit` records, newest first, with ids below `before` (all ids when `None`).
    /// Only the records on the page are read.
    ///
    /// # Errors
    /// When the directory or a record cannot be read.
    pub fn newest_before(&self, before: Option<u64>, limit: usize) -> Result<Vec<SwitchSession>> {
        self.ids()?
            .into_iter()
            .rev()
            .filter(|id| before.is_none_or(|b| *id < b))
            .take(limit)
            .map(|id| self.load(id))
            .collect()
    }

    /// The id the next switch gets: above every record, kept or set aside, so an id the
    /// ledger already names is never handed out again.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn next_id(&self) -> Result<u64> {
        let aside = self.dir.join(SET_ASIDE);
        let mut max = self.ids()?.last().copied().unwrap_or(0);
        if let Ok(entries) = fs::read_dir(&aside) {
            for e in entries.flatten() {
                let name = e.file_name();
                let digits: String = name
                    .to_string_lossy()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(id) = digits.parse::<u64>() {
                    max = max.max(id);
                }
            }
        }
        Ok(max + 1)
    }

    /// Moves every record that cannot be read as a switch (garbage, truncated, a directory)
    /// into `switches/set-aside/`, kept for a person, so that one bad file neither stops the
    /// daemon from starting nor hides the other records. Nothing is deleted.
    ///
    /// # Errors
    /// When the directory cannot be read or a bad record cannot be moved (the daemon then
    /// refuses to start rather than run next to a record it cannot account for).
    pub fn set_aside_unreadable(&self) -> Result<Vec<SetAside>> {
        let mut moved = Vec::new();
        for id in self.ids()? {
            let reason = match self.load(id) {
                Ok(_) | Err(WatchError::NotFound(_)) => continue,
                Err(WatchError::Backend(e)) => e,
                Err(e) => e.to_string(),
            };
            let from = self.path(id);
            let aside = self.dir.join(SET_ASIDE);
            fs::create_dir_all(&aside).map_err(WatchError::io("create", &aside))?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let to = aside.join(format!("{id:010}.json.{stamp}"));
            fs::rename(&from, &to).map_err(WatchError::io("set aside", &from))?;
            sync_dir(&self.dir)?;
            tracing::warn!(id, kept_as = %to.display(), "switch record set aside: {reason}");
            moved.push(SetAside {
                id,
                file: from,
                kept_as: to,
                reason,
            });
        }
        Ok(moved)
    }

    fn ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(WatchError::io("read", &self.dir))? {
            let entry = entry.map_err(WatchError::io("read", &self.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(id) = stem.parse::<u64>() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }
}

/// Writes `data` to `path` atomically and durably.
///
/// # Errors
/// When any step fails; `path` then still holds its previous content.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp).map_err(WatchError::io("create", &tmp))?;
        f.write_all(data).map_err(WatchError::io("write", &tmp))?;
        f.sync_all().map_err(WatchError::io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(WatchError::io("rename into place", path))?;
    sync_dir(dir)
}

/// fsyncs a directory so a rename or new entry in it is durable.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WatchError::io("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::session::{now_rfc3339, SwitchState};

    fn session(id: u64) -> SwitchSession {
        SwitchSession {
            id,
            generation: "abc".into(),
            previous_generation: None,
            plan: Some("test".into()),
            origin: "api".into(),
            action: None,
            ttl_secs: 1,
            health_checks: vec![],
            state: SwitchState::Pending,
            backend: "local".into(),
            previous_recorded: false,
            previous_system: None,
            built: None,
            warnings: vec![],
            probe_deadline_ms: None,
            checks: vec![],
            reason: None,
            revert_commit: None,
            incident_id: None,
            recoveries: 0,
            created_at: now_rfc3339(),
            updated_at: now_rfc3339(),
            history: vec![],
        }
    }

    #[test]
    fn save_load_roundtrip_and_ids() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        assert_eq!(store.next_id().unwrap(), 1);
        let mut s = session(1);
        store.save(&s).unwrap();
        s.state = SwitchState::Probing;
        store.save(&s).unwrap();
        store.save(&session(2)).unwrap();
        assert_eq!(store.load(1).unwrap().state, SwitchState::Probing);
        assert_eq!(store.next_id().unwrap(), 3);
        assert_eq!(store.all().unwrap().len(), 2);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(d.path().join("switches"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(matches!(store.load(9), Err(WatchError::NotFound(_))));
    }

    #[test]
    fn a_corrupt_record_is_reported_not_panicked_on() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        fs::write(d.path().join("switches/0000000005.json"), b"{not json").unwrap();
        let e = store.load(5).unwrap_err().to_string();
        assert!(e.contains("corrupt switch record"), "{e}");
    }

    #[test]
    fn unreadable_records_are_set_aside_and_their_ids_never_reused() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        store.save(&session(1)).unwrap();
        let sw = d.path().join("switches");
        fs::write(sw.join("0000000002.json"), b"{\"id\": 2, \"state\": \"prob").unwrap();
        fs::write(sw.join("0000000003.json"), b"\x00\xff garbage").unwrap();
        fs::create_dir(sw.join("0000000004.json")).unwrap();
        assert!(
            store.all().is_err(),
            "the bad records make all() fail before"
        );
        let moved = store.set_aside_unreadable().unwrap();
        assert_eq!(moved.iter().map(|m| m.id).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(
            moved[0].reason.contains("corrupt switch record"),
            "{:?}",
            moved[0]
        );
        assert_eq!(fs::read(&moved[1].kept_as).unwrap(), b"\x00\xff garbage");
        assert_eq!(store.all().unwrap().len(), 1);
        assert_eq!(store.next_id().unwrap(), 5);
        assert!(store.set_aside_unreadable().unwrap().is_empty());
    }

    #[test]
    fn state_names_are_kebab_case() {
        let v = serde_json::to_value(SwitchState::RollingBack).unwrap();
        assert_eq!(v, "rolling-back");
        assert_eq!(SwitchState::RolledBack.as_str(), "rolled-back");
        assert!(SwitchState::Failed.is_terminal() && !SwitchState::Probing.is_terminal());
    }
}
