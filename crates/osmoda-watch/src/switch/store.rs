//! Durable switch sessions: one JSON file per switch, written atomically (temp file, fsync,
//! rename, fsync of the directory) so a `kill -9` at any instant leaves either the old or the new
//! state on disk, never a torn file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::session::SwitchSession;
use crate::error::{Result, WatchError};

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

    /// The id the next switch gets.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.ids()?.last().map_or(1, |m| m + 1))
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
    fn state_names_are_kebab_case() {
        let v = serde_json::to_value(SwitchState::RollingBack).unwrap();
        assert_eq!(v, "rolling-back");
        assert_eq!(SwitchState::RolledBack.as_str(), "rolled-back");
        assert!(SwitchState::Failed.is_terminal() && !SwitchState::Probing.is_terminal());
    }
}
