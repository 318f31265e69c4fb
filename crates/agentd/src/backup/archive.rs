//! The archive file: a plain tar (readable with `tar tf`) whose first entry is `manifest.json`;
//! every other entry is listed in the manifest, in order, with its size and SHA-256. Reading
//! checks all of that before a single byte of it is used.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io, BackupError, FileEntry, Manifest, FORMAT};

/// Largest manifest read (a manifest lists file names and digests only).
const MAX_MANIFEST: u64 = 8 * 1024 * 1024;
/// The manifest's entry name.
pub const MANIFEST: &str = "manifest.json";

/// Tar's header errors quote the bytes they read (which could be any file's): never shown.
const NOT_TAR: &str = "not a tar archive (a header does not parse)";

fn corrupt(id: &str, reason: impl Into<String>) -> BackupError {
    BackupError::Corrupt {
        id: id.into(),
        reason: reason.into(),
    }
}

fn header(path: &str, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode & 0o7777);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    // Set by `append_data`, which also writes long names as GNU extensions.
    let _ = path;
    h
}

/// Writes the archive `file` (atomically: a temporary file, fsync, rename) from `manifest` and
/// the files it lists (`(entry, where the content is)`); returns the manifest's SHA-256.
///
/// # Errors
/// I/O errors; nothing is left at `file` then.
pub fn write(
    file: &Path,
    manifest: &Manifest,
    files: &[(FileEntry, PathBuf)],
) -> Result<String, BackupError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = file.parent().unwrap_or(Path::new("."));
    let part = dir.join(format!(
        ".{}.part",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("backup")
    ));
    let ctx = format!("writing {}", part.display());
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Io {
        context: "encoding the manifest".into(),
        source: std::io::Error::other(e),
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let result = (|| {
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(io(ctx.clone()))?;
        let mut tar = tar::Builder::new(out);
        let mut h = header(MANIFEST, bytes.len() as u64, 0o600);
        tar.append_data(&mut h, MANIFEST, bytes.as_slice())
            .map_err(io(ctx.clone()))?;
        for (entry, src) in files {
            let f = std::fs::File::open(src).map_err(io(format!("reading {}", src.display())))?;
            let mut h = header(&entry.path, entry.bytes, entry.mode);
            // The size was hashed from the same file; `take` keeps the entry exact if it grew.
            tar.append_data(&mut h, &entry.path, f.take(entry.bytes))
                .map_err(io(ctx.clone()))?;
        }
        let out = tar.into_inner().map_err(io(ctx.clone()))?;
        out.sync_all().map_err(io(ctx.clone()))?;
        std::fs::rename(&part, file).map_err(io(ctx.clone()))?;
        super::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result.map(|()| digest)
}

/// Whether `p` is a path an archive may hold: relative, `/`-separated normal components under
/// `agentd/` or `sources/<name>/`, or `tree.bundle`.
pub fn valid_path(p: &str) -> bool {
    if p.len() > 4096 || p.contains('\0') || p.contains('\\') {
        return false;
    }
    let parts: Vec<&str> = p.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return false;
    }
    let normal = Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    normal
        && match parts.as_slice() {
            ["tree.bundle"] => true,
            ["agentd", _] => true,
            ["sources", name, _, ..] => super::valid_source_name(name),
            _ => false,
        }
}

fn check_manifest(id: &str, m: &Manifest) -> Result<(), BackupError> {
    if m.format != FORMAT {
        return Err(corrupt(
            id,
            format!("format {:?}, this agentd reads {FORMAT:?}", m.format),
        ));
    }
    if m.id != id {
        return Err(corrupt(id, format!("the manifest names backup {:?}", m.id)));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &m.files {
        if !valid_path(&f.path) {
            return Err(corrupt(
                id,
                format!("invalid path {:?} in the manifest", f.path),
            ));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(corrupt(id, format!("{} is listed twice", f.path)));
        }
        if !matches!(f.kind.as_str(), "sqlite" | "file" | "bundle") {
            return Err(corrupt(
                id,
                format!("{} has unknown kind {:?}", f.path, f.kind),
            ));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(corrupt(id, format!("{} has no SHA-256", f.path)));
        }
    }
    // A path that is also a directory of another path cannot be restored.
    for f in &m.files {
        for (i, _) in f.path.match_indices('/') {
            if seen.contains(&f.path[..i]) {
                return Err(corrupt(
                    id,
                    format!("{} is both a file and a directory", &f.path[..i]),
                ));
            }
        }
    }
    if let Some(bad) = m.sources.keys().find(|n| !super::valid_source_name(n)) {
        return Err(corrupt(id, format!("invalid source name {bad:?}")));
    }
    if !seen.contains("agentd/ledger.db") {
        return Err(corrupt(id, "the manifest lists no agentd/ledger.db"));
    }
    Ok(())
}

fn read_manifest_entry<R: std::io::Read>(
    id: &str,
    entries: &mut tar::Entries<'_, R>,
) -> Result<(Manifest, String), BackupError> {
    let mut first = entries
        .next()
        .ok_or_else(|| corrupt(id, "the archive is empty"))?
        .map_err(|_| corrupt(id, NOT_TAR))?;
    let path = first
        .path()
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    if path != MANIFEST || first.header().entry_type() != tar::EntryType::Regular {
        return Err(corrupt(
            id,
            format!("the first entry is {path:?}, not {MANIFEST}"),
        ));
    }
    if first.size() > MAX_MANIFEST {
        return Err(corrupt(id, "the manifest is larger than 8 MiB"));
    }
    let mut bytes = Vec::new();
    first
        .by_ref()
        .take(MAX_MANIFEST)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(id, format!("reading the manifest: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        // Only where: serde's messages may quote the bytes.
        corrupt(
            id,
            format!(
                "the manifest does not parse (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    check_manifest(id, &manifest)?;
    Ok((manifest, hex::encode(Sha256::digest(&bytes))))
}

fn id_of(file: &Path) -> String {
    file.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar"))
        .unwrap_or("")
        .to_string()
}

/// The manifest of archive `file` and its SHA-256 (the files are not checked).
///
/// # Errors
/// [`BackupError::Corrupt`] when the first entry is not a valid manifest.
pub fn read_manifest(file: &Path) -> Result<(Manifest, String), BackupError> {
    let id = id_of(file);
    let f = super::open_archive(file)?;
    let mut archive = tar::Archive::new(f);
    let mut entries = archive.entries().map_err(|_| corrupt(&id, NOT_TAR))?;
    read_manifest_entry(&id, &mut entries)
}

/// Extracts archive `file` into the empty directory `staging`, checking every entry against the
/// manifest (order, name, type, size, SHA-256) and that none is missing or extra; returns the
/// manifest and its SHA-256. Nothing outside `staging` is written.
///
/// # Errors
/// [`BackupError::Corrupt`] naming the first mismatch; I/O errors of `staging`.
pub fn extract_verified(file: &Path, staging: &Path) -> Result<(Manifest, String), BackupError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let id = id_of(file);
    let f = super::open_archive(file)?;
    let mut archive = tar::Archive::new(f);
    let mut entries = archive.entries().map_err(|_| corrupt(&id, NOT_TAR))?;
    let (manifest, digest) = read_manifest_entry(&id, &mut entries)?;
    let mut expected = manifest.files.iter();
    for entry in entries {
        let mut entry = entry.map_err(|_| corrupt(&id, NOT_TAR))?;
        let path = entry
            .path()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some(want) = expected.next() else {
            return Err(corrupt(&id, format!("{path} is not in the manifest")));
        };
        if path != want.path {
            return Err(corrupt(
                &id,
                format!("found {path:?} where the manifest lists {:?}", want.path),
            ));
        }
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() != want.bytes {
            return Err(corrupt(
                &id,
                format!("{path} is not a regular file of {} bytes", want.bytes),
            ));
        }
        let dest = staging.join(&want.path);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())))?;
        }
        let ctx = format!("writing {}", dest.display());
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(io(ctx.clone()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let k = entry
                .read(&mut buf)
                .map_err(|e| corrupt(&id, format!("reading {path}: {e}")))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            std::io::Write::write_all(&mut out, &buf[..k]).map_err(io(ctx.clone()))?;
            n += k as u64;
        }
        out.sync_all().map_err(io(ctx))?;
        if n != want.bytes || hex::encode(h.finalize()) != want.sha256 {
            return Err(corrupt(
                &id,
                format!("{path} does not match its SHA-256 in the manifest"),
            ));
        }
    }
    if let Some(missing) = expected.next() {
        return Err(corrupt(&id, format!("{} is missing", missing.path)));
    }
    Ok((manifest, digest))
}

#[cfg(test)]
mod tests {
    use super::valid_path;

    #[test]
    fn only_paths_under_the_known_roots_are_valid() {
        for ok in [
            "tree.bundle",
            "agentd/ledger.db",
            "sources/keyd/keyd.db",
            "sources/memory/memory/2026-11-30.md",
        ] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "agentd/../../x",
            "agentd/a/b",
            "sources/keyd",
            "sources/Key D/x",
            "sources/keyd/./x",
            "sources/keyd//x",
            "other/x",
            "agentd\\x",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
    }
}
