//! Consistent copies of SQLite databases for backups, and putting them back, with SQLite's
//! online backup API (never a file copy, which can tear a database that is being written).

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::LedgerError;

/// How long a copy waits for another connection's lock before it gives up.
const BUSY: Duration = Duration::from_secs(10);

fn open_existing(path: &Path, flags: OpenFlags) -> Result<Connection, LedgerError> {
    if !path.is_file() {
        return Err(LedgerError::Io {
            context: format!("opening database {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY)?;
    Ok(conn)
}

/// Copies all of `src` into `dst` in one step (one write transaction on `dst`): readers of `dst`
/// and a crash see either all of the old or all of the new content.
fn copy(src: &Connection, dst: &mut Connection) -> Result<(), LedgerError> {
    let backup = Backup::new(src, dst)?;
    let deadline = std::time::Instant::now() + BUSY;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            StepResult::Busy | StepResult::Locked => {
                return Err(LedgerError::WriteFailed(
                    "the database stayed locked for 10 s; nothing was copied".into(),
                ))
            }
            _ => {}
        }
    }
}

/// Writes a consistent snapshot of the SQLite database `src` (which may be in use, in WAL mode)
/// to the new file `dest`, as a self-contained database (rollback journal, no `-wal` file).
///
/// # Errors
/// [`LedgerError::Io`] when `src` is missing or `dest` exists; [`LedgerError::Sqlite`] when
/// `src` is not a database or the copy fails (then `dest` is removed).
pub fn sqlite_snapshot(src: &Path, dest: &Path) -> Result<(), LedgerError> {
    snapshot_with(src, dest, OpenFlags::empty())
}

/// [`sqlite_snapshot`] of a database in a directory another user may write: SQLite refuses to
/// open `src` when its path holds a symbolic link anywhere (`SQLITE_OPEN_NOFOLLOW`, the error's
/// extended code `SQLITE_CANTOPEN_SYMLINK`).
///
/// # Errors
/// As [`sqlite_snapshot`].
pub fn sqlite_snapshot_nofollow(src: &Path, dest: &Path) -> Result<(), LedgerError> {
    snapshot_with(src, dest, OpenFlags::SQLITE_OPEN_NOFOLLOW)
}

fn snapshot_with(src: &Path, dest: &Path, extra: OpenFlags) -> Result<(), LedgerError> {
    if dest.exists() {
        return Err(LedgerError::Io {
            context: format!("writing snapshot {}", dest.display()),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
        });
    }
    let source = open_existing(src, OpenFlags::SQLITE_OPEN_READ_WRITE | extra)?;
    source.pragma_update(None, "query_only", true)?;
    let result = (|| {
        let mut out = Connection::open(dest)?;
        copy(&source, &mut out)?;
        let mode: String = out.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(LedgerError::Malformed(format!(
                "snapshot {} stays in journal mode {mode:?}",
                dest.display()
            )));
        }
        out.close().map_err(|(_, e)| LedgerError::Sqlite(e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// Replaces the content of the live SQLite database `live` (which other processes may have
/// open) with the database file `src`, in one transaction: a crash or another reader sees the
/// old or the new content, never a mix. Processes holding `live` open see the new rows on their
/// next transaction, but not state they cached in memory (restart them).
///
/// # Errors
/// [`LedgerError::Io`] when either file is missing; [`LedgerError::Sqlite`] when `src` is not
/// a database or the copy fails (rolled back); [`LedgerError::WriteFailed`] when `live` stays
/// locked.
pub fn sqlite_replace(live: &Path, src: &Path) -> Result<(), LedgerError> {
    let source = open_existing(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut dst = open_existing(live, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    copy(&source, &mut dst)
}

/// Writes a self-contained copy of the database behind `conn` (the writer's own connection) to
/// the new file `keep`: a temporary file, synced, renamed, the directory synced.
pub(crate) fn keep_copy(conn: &Connection, keep: &Path) -> Result<(), LedgerError> {
    let io = |source| LedgerError::Io {
        context: format!("keeping the replaced ledger as {}", keep.display()),
        source,
    };
    let mut name = keep.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = keep.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut out = Connection::open(&tmp)?;
        copy(conn, &mut out)?;
        let _: String = out.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
        out.close().map_err(|(_, e)| LedgerError::Sqlite(e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, keep).map_err(io)?;
        sync_parent(keep).map_err(io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates the empty marker file `done`, durably.
pub(crate) fn mark_done(done: &Path) -> Result<(), LedgerError> {
    std::fs::File::create(done)
        .and_then(|f| f.sync_all())
        .and_then(|()| sync_parent(done))
        .map_err(|source| LedgerError::Io {
            context: format!("marking the restored ledger in place ({})", done.display()),
            source,
        })
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path.parent().unwrap_or(Path::new("."))).and_then(|d| d.sync_all())
}

/// The writer's half of [`crate::Ledger::restore_from`]: checks that `src` is a ledger of this
/// schema version or an older one with the Merkle tree (3), replaces the database behind `conn`
/// with it and upgrades it to this version.
pub(crate) fn replace_with(conn: &mut Connection, src: &Path) -> Result<(), LedgerError> {
    let source = open_existing(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = source.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_events: bool = source.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| r.get(0),
    )?;
    if !(MIN_RESTORE_VERSION..=crate::schema::SCHEMA_VERSION).contains(&version) || !has_events {
        return Err(LedgerError::Malformed(format!(
            "{} is not a ledger of schema version {MIN_RESTORE_VERSION} to {} (user_version {version}); nothing was restored",
            src.display(),
            crate::schema::SCHEMA_VERSION
        )));
    }
    let foreign = foreign_objects(src)?;
    if !foreign.is_empty() {
        return Err(LedgerError::Malformed(format!(
            "{} holds schema objects a ledger does not have ({}); nothing was restored",
            src.display(),
            foreign.join(", ")
        )));
    }
    copy(&source, conn)?;
    // The copy carries the source's header; the live ledger stays in WAL mode.
    crate::schema::configure(conn)?;
    // A backup from an older version is upgraded as an open would (its own transaction: a crash
    // in between leaves the restored old version, which the next open upgrades).
    crate::schema::create(conn)
}

/// Oldest schema version a backup may have to be restored (3: the first with the Merkle tree).
const MIN_RESTORE_VERSION: i64 = 3;

/// Objects of the SQLite file `src` that run code on their own: its triggers and views (a
/// trigger in a restored database would rewrite or drop later rows), as `type name`.
///
/// # Errors
/// [`LedgerError::Io`] when `src` is missing; [`LedgerError::Sqlite`] when it is no database.
pub fn sqlite_active_objects(src: &Path) -> Result<Vec<String>, LedgerError> {
    let conn = open_existing(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT type || ' ' || name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY name",
    )?;
    let out = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(out)
}

/// The schema objects of ledger file `src` that this version's schema does not define, as
/// `type name`: triggers, views, and tables or indexes of other names, or (for a file of this
/// schema version) a definition that differs. A restored ledger brings agentd's schema only.
///
/// # Errors
/// As [`sqlite_active_objects`].
pub fn foreign_objects(src: &Path) -> Result<Vec<String>, LedgerError> {
    type Objects = std::collections::BTreeMap<(String, String), Option<String>>;
    fn objects(c: &Connection) -> Result<Objects, LedgerError> {
        let mut stmt = c.prepare("SELECT type, name, sql FROM sqlite_master")?;
        let out = stmt
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
            .collect::<Result<Objects, _>>()?;
        Ok(out)
    }
    let source = open_existing(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = source.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let fresh = Connection::open_in_memory()?;
    crate::schema::create(&fresh)?;
    let expected = objects(&fresh)?;
    // Tables of older schema versions a restore upgrades (3 kept the tree here).
    let legacy = ["tree_hashes", "tree_state"];
    let mut out = Vec::new();
    for ((kind, name), sql) in objects(&source)? {
        let known = match expected.get(&(kind.clone(), name.clone())) {
            Some(want) => version != crate::schema::SCHEMA_VERSION || *want == sql,
            None => {
                (kind == "table" || kind == "index")
                    && (name.starts_with("sqlite_") || legacy.contains(&name.as_str()))
            }
        };
        if !known {
            out.push(format!("{kind} {name}"));
        }
    }
    Ok(out)
}
