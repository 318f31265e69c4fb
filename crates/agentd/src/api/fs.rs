//! `/fs/read`, `/fs/write`, `/fs/list`: the agent's file access, audited and fenced.
//!
//! Every call is one ledger event (`fs.read`, `fs.write` with the SHA-256 before and after,
//! `fs.list`). Paths are judged by where they really lead: each file or directory is opened
//! first and its real path read back from `/proc/self/fd`, so a symlink or a renamed parent
//! cannot smuggle a call past the checks. Hidden (refused for every call): agentd's state
//! directory and the boundary paths of [`osmoda_sandbox::OSMODA_MASKED`] (approval path, keyd).
//! Read-only: the configuration tree and `/etc/nixos`, whose only writer is the config API.
//! Gated (a write needs a person's approval ticket, like a destructive config edit): login
//! files and credentials (`fs.login`, see [`super::secrets`]) and anything outside the writable
//! roots (`fs.outside_roots`, [`crate::Settings::writable_roots`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{Mode, SFlag};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Json, Query};
use crate::peer::Caller;
use crate::AppState;

/// Most bytes one `/fs/read` returns (default 64 KiB).
pub const MAX_READ: u64 = 1024 * 1024;
const DEFAULT_READ: u64 = 64 * 1024;
/// Most entries one `/fs/list` returns.
pub const MAX_LIST: usize = 10_000;
/// Where NixOS keeps a configuration by hand; written only through the config API.
const ETC_NIXOS: &str = "/etc/nixos";

fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, msg)
}

/// A failed file operation on `path`, in words: the system's description of the error, without
/// its symbolic name or number (`ENOENT: …`, `(os error 2)`).
fn io_error(path: &Path, e: impl Into<std::io::Error>) -> ApiError {
    let e: std::io::Error = e.into();
    let why = match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    };
    ApiError::bad_request(format!("{}: {why}", path.display()))
}

/// A path from the caller: absolute, without `.`/`..` or empty components, at most 4096 bytes.
pub(crate) fn checked_path(raw: &str) -> Result<PathBuf, ApiError> {
    // Checked on the text: `Path::components` would quietly drop `.` and empty segments.
    let normal = raw == "/"
        || (raw.len() <= 4096
            && !raw.contains('\0')
            && raw
                .strip_prefix('/')
                .is_some_and(|rest| rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."))));
    if normal {
        Ok(PathBuf::from(raw))
    } else {
        Err(ApiError::bad_request(format!(
            "path {raw:?} must be absolute and normal (no `.`, `..`, empty segments or NUL)"
        )))
    }
}

/// The real path of an open descriptor.
fn real_path(fd: &impl AsRawFd) -> Result<PathBuf, ApiError> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(ApiError::internal)
}

/// `p` with each existing prefix resolved (the real location a new file would get).
pub(crate) fn resolve_lexically(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

/// The places a call may not go, from agentd's own settings.
pub(crate) struct Fence {
    hidden: Vec<(PathBuf, &'static str)>,
    read_only: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    /// Homes whose login files need a person ([`Fence::with_tree_homes`] adds the tree's).
    homes: super::secrets::Homes,
}

impl Fence {
    /// Paths hidden from every call (and masked from `/system/exec` commands).
    pub(crate) fn hidden(&self) -> impl Iterator<Item = &Path> {
        self.hidden.iter().map(|(p, _)| p.as_path())
    }

    /// Paths only the config API writes.
    pub(crate) fn read_only(&self) -> impl Iterator<Item = &Path> {
        self.read_only.iter().map(PathBuf::as_path)
    }

    pub(crate) fn of(st: &AppState) -> Fence {
        let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let mut hidden = vec![(real(&st.state_dir), "agentd's state")];
        // The other daemons' state beside agentd's (`<stateDir>/<daemon>`): a file the agent
        // dropped there would be acted on by that daemon under its own identity.
        if st.state_dir.file_name() == Some(std::ffi::OsStr::new("agentd")) {
            if let Some(root) = st.state_dir.parent() {
                for d in osmoda_sandbox::DAEMON_STATE_DIRS
                    .iter()
                    .filter(|d| **d != "agentd")
                {
                    hidden.push((real(&root.join(d)), "an osModa daemon's state"));
                }
            }
        }
        // Backup archives hold every daemon's state: daemon state wherever `backup.dir` is.
        let backups = crate::backup::backup_dir(&st.settings.backup, &st.state_dir);
        hidden.push((real(&backups), "the backup archives"));
        for m in osmoda_sandbox::OSMODA_MASKED {
            hidden.push((
                real(Path::new(m)),
                "the approval path and the daemons' secrets",
            ));
        }
        // A non-default approval socket: its directory is as much the approval path as the
        // default `/run/osmoda-admin` (a socket directly under `/` is masked by itself).
        if let Some(sock) = &st.settings.approval_socket {
            let dir = sock
                .parent()
                .filter(|d| *d != Path::new("/"))
                .unwrap_or(sock);
            hidden.push((real(dir), "the approval socket's directory"));
        }
        // The approval relay's directory, where it is not the default (masked above).
        if let Some(dir) = st.settings.relay_socket.as_deref().and_then(Path::parent) {
            hidden.push((real(dir), "the approval relay"));
        }
        let mut read_only = vec![real(Path::new(ETC_NIXOS))];
        if let Some(tree) = &st.config_tree {
            read_only.push(real(tree.dir()));
        }
        let writable = st.settings.writable_roots.iter().map(|p| real(p)).collect();
        // The running system's accounts; unreadable, every home is undecided (login files are
        // then known by name anywhere).
        let homes = match std::fs::read_to_string(&st.settings.accounts_file) {
            Ok(text) => super::secrets::Homes::from_passwd(&text),
            Err(_) => super::secrets::Homes {
                dirs: Vec::new(),
                undecided: true,
            },
        };
        Fence {
            hidden,
            read_only,
            writable,
            homes,
        }
    }

    /// Add the homes the configuration tree's `HEAD` gives its users (evaluated once per
    /// commit), for calls that write.
    pub(crate) async fn with_tree_homes(mut self, st: &AppState) -> Fence {
        if let Some(tree) = &st.config_tree {
            let dir = tree.dir().to_path_buf();
            let tree_homes = tokio::task::spawn_blocking(move || crate::gate::homes::of_tree(&dir))
                .await
                .unwrap_or(super::secrets::Homes {
                    dirs: Vec::new(),
                    undecided: true,
                });
            for d in &tree_homes.dirs {
                self.homes.add(d);
            }
            self.homes.undecided |= tree_homes.undecided;
        }
        // Homes are compared with resolved paths.
        self.homes.dirs = self
            .homes
            .dirs
            .iter()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
            .collect();
        self
    }

    /// The homes whose login files need a person.
    pub(crate) fn homes(&self) -> &super::secrets::Homes {
        &self.homes
    }

    /// What makes a write of `real` need a person's approval: its kind and why, in words.
    pub(crate) fn gated(&self, real: &Path) -> Option<(&'static str, String)> {
        if let Some(why) = super::secrets::login_path(real, &self.homes) {
            return Some(("fs.login", why.to_string()));
        }
        if !self.writable.iter().any(|r| real.starts_with(r)) {
            let roots: Vec<String> = self
                .writable
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Some((
                "fs.outside_roots",
                format!(
                    "it is outside the directories the agent writes freely ({})",
                    roots.join(", ")
                ),
            ));
        }
        None
    }

    /// Refuses `real` if it is hidden, or read-only and `write` is set.
    pub(crate) fn check(&self, real: &Path, write: bool) -> Result<(), ApiError> {
        if let Some((root, what)) = self.hidden.iter().find(|(r, _)| real.starts_with(r)) {
            return Err(forbidden(format!(
                "{} is inside {} ({}), which the agent cannot see",
                real.display(),
                root.display(),
                what
            )));
        }
        // Login files and credentials are written only with a ticket (`Fence::gated`).
        let refused = if write {
            super::secrets::never_written(real)
        } else {
            super::secrets::unreadable(real)
        };
        if let Some(why) = refused {
            return Err(forbidden(format!("{}: {why}", real.display())));
        }
        if write {
            if let Some(root) = self.read_only.iter().find(|r| real.starts_with(r)) {
                return Err(forbidden(format!(
                    "{} is in the configuration tree ({}): change configuration with config_set (POST /config/set), which validates, commits and records it; apply it with SafeSwitch",
                    real.display(),
                    root.display()
                ))
                .with_detail(json!({ "use": "config_set" })));
            }
        }
        Ok(())
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Query of `GET /fs/read`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// Absolute path of a regular file.
    pub path: String,
    /// First byte to return (default 0).
    pub offset: Option<u64>,
    /// Most bytes to return (default 65,536, at most [`MAX_READ`]).
    pub limit: Option<u64>,
}

/// `GET /fs/read` → `{path, size, offset, bytes, truncated, encoding: utf8|base64, content}`;
/// `truncated` when the file goes on past `offset + bytes`.
pub async fn read(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ReadParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let path = checked_path(&q.path)?;
    let limit = q.limit.unwrap_or(DEFAULT_READ);
    if limit == 0 || limit > MAX_READ {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={MAX_READ}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let fence = Fence::of(&st);
    let (real, size, data) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            // Judged by name before opening (some credentials cannot even be opened), and again
            // by the real path of what was opened.
            fence.check(&resolve_lexically(&path), false)?;
            // O_NONBLOCK: opening a FIFO must not hang the call; only regular files are read.
            let fd = open(
                &path,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_error(&path, e))?;
            let real = real_path(&fd)?;
            fence.check(&real, false)?;
            let mut f = File::from(fd);
            let meta = f.metadata().map_err(|e| io_error(&path, e))?;
            if !meta.is_file() {
                return Err(ApiError::bad_request(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| io_error(&path, e))?;
            let mut data = Vec::new();
            f.take(limit)
                .read_to_end(&mut data)
                .map_err(|e| io_error(&path, e))?;
            Ok((real, meta.len(), data))
        })
        .await
        .map_err(ApiError::internal)??
    };
    let bytes = data.len() as u64;
    let (encoding, content) = match String::from_utf8(data) {
        Ok(s) => ("utf8", s),
        Err(e) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
        ),
    };
    st.record(
        "fs.read",
        &caller.actor,
        &json!({ "path": real, "offset": offset, "bytes": bytes }),
    )
    .await?;
    Ok(axum::Json(json!({
        "path": real, "size": size, "offset": offset, "bytes": bytes,
        "truncated": offset.saturating_add(bytes) < size,
        "encoding": encoding, "content": content,
    })))
}

/// Body of `POST /fs/write`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    /// Absolute path; an existing target must be a regular file (not a symlink).
    pub path: String,
    /// New content as UTF-8 text.
    pub content: Option<String>,
    /// New content as base64 (for binary files).
    pub content_base64: Option<String>,
    /// Permission bits, e.g. `0o644` as the number 420 (default: the old file's, else 0644).
    pub mode: Option<u32>,
    /// Create missing parent directories (mode 0755).
    #[serde(default)]
    pub create_dirs: bool,
    /// Approval ticket for a write the gate refused (a login file, a credential, a path outside
    /// the writable roots), bound to the path, the content's SHA-256 and mode before and after.
    pub approval: Option<String>,
}

/// `POST /fs/write` → `{path, bytes, mode, created, sha256_before, sha256_after, event_id}`:
/// the file is replaced atomically (a temporary file in the same directory, fsynced, renamed).
pub async fn write(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<WriteBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let path = checked_path(&b.path)?;
    let data = match (b.content, b.content_base64) {
        (Some(t), None) => t.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("content_base64 is not base64: {e}")))?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `content` or `content_base64`",
            ))
        }
    };
    if let Some(m) = b.mode {
        if m > 0o7777 {
            return Err(ApiError::bad_request(
                "mode must be permission bits (at most 0o7777)",
            ));
        }
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ApiError::bad_request("path must name a file"));
    };
    let (parent, name) = (parent.to_path_buf(), name.to_os_string());
    let fence = Fence::of(&st).with_tree_homes(&st).await;
    // Judge the real destination before creating anything.
    let lexical = resolve_lexically(&path);
    fence.check(&lexical, true)?;
    let sha_after = sha256_hex(&data);
    let approval = b.approval.clone();
    if approval.is_none() {
        // A gated write without a ticket: refused (and its ticket opened) before anything,
        // parent directories included, is created.
        // The file itself as named (a symlink there is refused below, not followed).
        let named = resolve_lexically(&parent).join(&name);
        if let Some((kind, why)) = fence.gated(&named) {
            let l = named.clone();
            let (sha, mode) = tokio::task::spawn_blocking(move || super::fs_gate::current(&l))
                .await
                .map_err(ApiError::internal)?;
            let new_mode = b.mode.or(mode).unwrap_or(0o644);
            let f = super::fs_gate::finding(
                kind,
                &named,
                &why,
                (sha.as_deref(), mode),
                (&sha_after, new_mode),
            );
            // `fs.*` kinds always need approval: this refuses, with the ticket.
            let _never = crate::gate::check_fs_write(&st, &caller.actor, vec![f], None).await?;
        }
    }
    let prepared = tokio::task::spawn_blocking({
        let (parent, name, path) = (parent.clone(), name.clone(), path.clone());
        move || -> Result<_, ApiError> {
            if b.create_dirs {
                std::fs::create_dir_all(&parent).map_err(|e| io_error(&parent, e))?;
            }
            let dir = open(
                &parent,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_error(&parent, e))?;
            let real_dir = real_path(&dir)?;
            let real = real_dir.join(&name);
            fence.check(&real, true)?;
            let gated = fence.gated(&real);
            let before = match nix::sys::stat::fstatat(
                &dir,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Err(nix::errno::Errno::ENOENT) => None,
                Err(e) => return Err(io_error(&path, e)),
                Ok(st) => {
                    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                    if kind == SFlag::S_IFLNK {
                        return Err(ApiError::bad_request(format!(
                            "{} is a symlink; write the file it points to instead",
                            path.display()
                        )));
                    }
                    if kind != SFlag::S_IFREG {
                        return Err(ApiError::bad_request(format!(
                            "{} exists and is not a regular file; only regular files are replaced",
                            path.display()
                        )));
                    }
                    let fd = openat(
                        &dir,
                        name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_error(&path, e))?;
                    let mut f = File::from(fd);
                    let meta = f.metadata().map_err(|e| io_error(&path, e))?;
                    if !meta.is_file() {
                        return Err(ApiError::bad_request(format!(
                            "{} changed while being replaced",
                            path.display()
                        )));
                    }
                    let mut old = Vec::new();
                    f.read_to_end(&mut old).map_err(|e| io_error(&path, e))?;
                    // A credential's old content is not hashed into the ledger or a ticket.
                    let sha = if super::secrets::unreadable(&real).is_some() {
                        super::fs_gate::NOT_HASHED.to_string()
                    } else {
                        sha256_hex(&old)
                    };
                    Some((sha, meta.mode() & 0o7777, meta.uid(), meta.gid()))
                }
            };
            let mode = b.mode.or(before.as_ref().map(|b| b.1)).unwrap_or(0o644);
            let tmp_name = format!(
                ".{}.osmoda-{}",
                name.to_string_lossy(),
                hex::encode(rand_bytes()?)
            );
            let tmp = openat(
                &dir,
                tmp_name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| io_error(&real_dir.join(&tmp_name), e))?;
            let mut f = File::from(tmp);
            let written = (|| {
                f.write_all(&data)?;
                if let Some((_, _, uid, gid)) = &before {
                    // Keep the owner of a replaced file (best effort: needs privilege).
                    let _ = nix::unistd::fchown(
                        f.as_fd(),
                        Some(nix::unistd::Uid::from_raw(*uid)),
                        Some(nix::unistd::Gid::from_raw(*gid)),
                    );
                }
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                f.sync_all()
            })();
            if let Err(e) = written {
                let _ = nix::unistd::unlinkat(
                    &dir,
                    tmp_name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
                return Err(io_error(&path, e));
            }
            Ok(Prepared {
                dir,
                tmp_name,
                name,
                real,
                mode,
                before_mode: before.as_ref().map(|b| b.1),
                before: before.map(|b| b.0),
                after: sha256_hex(&data),
                bytes: data.len(),
                gated,
            })
        }
    })
    .await
    .map_err(ApiError::internal)??;
    // The gate judges the real destination and the real old file (the check above judged the
    // path as named): without a ticket for exactly this write, nothing lands.
    let findings: Vec<_> = prepared
        .gated
        .iter()
        .map(|(kind, why)| {
            super::fs_gate::finding(
                kind,
                &prepared.real,
                why,
                (prepared.before.as_deref(), prepared.before_mode),
                (&prepared.after, prepared.mode),
            )
        })
        .collect();
    let guard = match crate::gate::check_fs_write(&st, &caller.actor, findings, approval.as_deref())
        .await
    {
        Ok(g) => g,
        Err(e) => {
            prepared.discard();
            return Err(e);
        }
    };
    let approval = prepared.gated.as_ref().and(approval);
    // Recorded before the rename, so no write lands unaudited; a failed rename is recorded too.
    let ev = st
        .record(
            "fs.write",
            &caller.actor,
            &json!({
                "path": prepared.real, "bytes": prepared.bytes, "mode": prepared.mode,
                "sha256_before": prepared.before, "sha256_after": prepared.after,
                "approval": approval,
            }),
        )
        .await;
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            prepared.discard();
            return Err(e);
        }
    };
    let Prepared {
        dir,
        tmp_name,
        name,
        real,
        mode,
        before,
        after,
        bytes,
        ..
    } = prepared;
    let renamed = tokio::task::spawn_blocking(move || {
        renameat(&dir, tmp_name.as_str(), &dir, name.as_os_str())
            .and_then(|()| nix::unistd::fsync(&dir))
            .inspect_err(|_| {
                let _ = nix::unistd::unlinkat(
                    &dir,
                    tmp_name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            })
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = renamed {
        st.record(
            "fs.write.failed",
            &caller.actor,
            &json!({ "path": real, "event_id": ev.id, "error": e.to_string() }),
        )
        .await?;
        return Err(io_error(&real, e));
    }
    guard.landed(&st).await;
    Ok(axum::Json(json!({
        "path": real, "bytes": bytes, "mode": mode, "created": before.is_none(),
        "sha256_before": before, "sha256_after": after, "event_id": ev.id,
    })))
}

struct Prepared {
    dir: OwnedFd,
    tmp_name: String,
    name: std::ffi::OsString,
    real: PathBuf,
    mode: u32,
    before: Option<String>,
    before_mode: Option<u32>,
    after: String,
    bytes: usize,
    /// Why writing `real` needs a ticket, when it does.
    gated: Option<(&'static str, String)>,
}

impl Prepared {
    fn discard(&self) {
        let _ = nix::unistd::unlinkat(
            &self.dir,
            self.tmp_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

fn rand_bytes() -> Result<[u8; 8], ApiError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(ApiError::internal)?;
    Ok(b)
}

/// Query of `GET /fs/list`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Absolute path of a directory.
    pub path: String,
}

/// `GET /fs/list` → `{path, entries: [{name, kind: file|dir|symlink|other, size, mode}], truncated}`,
/// sorted by name, at most [`MAX_LIST`] entries.
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let path = checked_path(&q.path)?;
    let fence = Fence::of(&st);
    let (real, entries, truncated) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let fd = open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(&path, e))?;
        let real = real_path(&fd)?;
        fence.check(&real, false)?;
        // Read through the descriptor we checked, not through the path again.
        let mut entries = Vec::new();
        let mut truncated = false;
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| io_error(&path, e))?
        {
            let entry = entry.map_err(|e| io_error(&path, e))?;
            if entries.len() == MAX_LIST {
                truncated = true;
                break;
            }
            let meta = entry.metadata().ok();
            let kind = match entry.file_type() {
                Ok(t) if t.is_symlink() => "symlink",
                Ok(t) if t.is_dir() => "dir",
                Ok(t) if t.is_file() => "file",
                _ => "other",
            };
            entries.push(json!({
                "name": entry.file_name().to_string_lossy(),
                "kind": kind,
                "size": meta.as_ref().map(|m| m.len()),
                "mode": meta.as_ref().map(|m| m.mode() & 0o7777),
            }));
        }
        entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        drop(fd);
        Ok((real, entries, truncated))
    })
    .await
    .map_err(ApiError::internal)??;
    st.record(
        "fs.list",
        &caller.actor,
        &json!({ "path": real, "entries": entries.len() }),
    )
    .await?;
    Ok(axum::Json(
        json!({ "path": real, "entries": entries, "truncated": truncated }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_normal() {
        for ok in ["/", "/etc/hosts", "/tmp/a b/c"] {
            assert!(checked_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "etc/hosts",
            "/etc/../root",
            "/etc/./x",
            "/etc//x",
            "/etc/",
            "/a\0b",
            &format!("/{}", "x".repeat(5000)),
        ] {
            assert!(checked_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fence_hides_state_and_keeps_the_tree_read_only() {
        let fence = Fence {
            hidden: vec![(PathBuf::from("/var/lib/osmoda/agentd"), "agentd's state")],
            read_only: vec![PathBuf::from("/srv/tree"), PathBuf::from(ETC_NIXOS)],
            writable: vec![PathBuf::from("/srv"), PathBuf::from("/home")],
            homes: crate::api::secrets::Homes::default(),
        };
        assert!(fence
            .check(Path::new("/var/lib/osmoda/agentd/ledger.db"), false)
            .is_err());
        assert!(
            fence
                .check(Path::new("/var/lib/osmoda/agentdx"), false)
                .is_ok(),
            "a prefix of a name is not inside"
        );
        assert!(fence
            .check(Path::new("/srv/tree/osmoda.nix"), false)
            .is_ok());
        let e = fence
            .check(Path::new("/srv/tree/osmoda.nix"), true)
            .expect_err("tree is read-only");
        assert!(e.error.contains("config_set"), "{}", e.error);
        assert!(fence
            .check(Path::new("/etc/nixos/configuration.nix"), true)
            .is_err());
        assert!(fence.check(Path::new("/etc/hosts"), true).is_ok());
        // Process memory is never written; login files and paths outside the roots are gated.
        assert!(fence.check(Path::new("/proc/1/mem"), true).is_err());
        for (p, kind) in [
            ("/etc/hosts", Some("fs.outside_roots")),
            ("/boot/grub/grub.cfg", Some("fs.outside_roots")),
            ("/srvx/a", Some("fs.outside_roots")),
            ("/etc/sudoers.d/x", Some("fs.login")),
            ("/etc/shadow", Some("fs.login")),
            ("/home/alice/.ssh/authorized_keys", Some("fs.login")),
            ("/home/alice/notes.txt", None),
            ("/srv/www/index.html", None),
        ] {
            assert_eq!(fence.gated(Path::new(p)).map(|g| g.0), kind, "{p}");
        }
    }

    #[test]
    fn resolve_lexically_follows_existing_prefixes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let got = resolve_lexically(&dir.path().join("link/new/file"));
        assert_eq!(
            got,
            real.canonicalize().expect("canonical").join("new/file")
        );
    }
}
