//! What a change is, by the tree's `.gitattributes`, the way `git add` decides it: a file
//! re-saved with other line endings is unchanged when its attributes say git normalises them
//! (`text`, `text=auto`, `eol=…`, or `core.autocrlf`), and changed when they say it does not
//! (`-text`, `binary`, or nothing set). Status, an agent's edit and a person's commit all ask
//! this one place, so they can never disagree (a tree that says "modified", refuses an edit
//! and then has "nothing to commit" is stuck).
//!
//! Only end-of-line conversion is modelled; `ident`, `working-tree-encoding` and `filter=`
//! drivers are not (a tree using them is judged on raw bytes).

use std::borrow::Cow;
use std::path::Path;

use git2::{AttrCheckFlags, AttrValue, ObjectType, Oid, Repository};

/// How git converts a file's line endings when it is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    /// No conversion: the bytes are the content.
    None,
    /// CRLF → LF always (`text`, `eol=…`).
    Text,
    /// CRLF → LF unless the file looks binary or the staged version has CRLF (`text=auto`,
    /// `core.autocrlf`).
    Auto,
}

fn eol_mode(repo: &Repository, rel: &Path) -> Eol {
    let attr = |name| {
        repo.get_attr(rel, name, AttrCheckFlags::default())
            .ok()
            .flatten()
            .map(str::to_string)
    };
    let text = attr("text");
    match AttrValue::from_string(text.as_deref()) {
        AttrValue::True => return Eol::Text,
        AttrValue::False => return Eol::None,
        AttrValue::String("auto") => return Eol::Auto,
        _ => {}
    }
    if matches!(
        AttrValue::from_string(attr("eol").as_deref()),
        AttrValue::String(_)
    ) {
        return Eol::Text;
    }
    let autocrlf = repo
        .config()
        .ok()
        .and_then(|c| c.get_string("core.autocrlf").ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if matches!(autocrlf.as_str(), "true" | "input" | "yes" | "on" | "1") {
        Eol::Auto
    } else {
        Eol::None
    }
}

/// Git's test for `text=auto`: a NUL byte or a lone CR means binary.
fn looks_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0)
        || bytes
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

fn has_crlf(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\r\n")
}

/// The bytes git would store for `rel` with work-tree content `bytes`; `staged` is the content
/// git has for it now (index or `HEAD`), which `text=auto` consults.
pub(crate) fn to_odb<'a>(
    repo: &Repository,
    rel: &Path,
    bytes: &'a [u8],
    staged: Option<&[u8]>,
) -> Cow<'a, [u8]> {
    if !has_crlf(bytes) {
        return Cow::Borrowed(bytes);
    }
    let convert = match eol_mode(repo, rel) {
        Eol::None => false,
        Eol::Text => true,
        Eol::Auto => !looks_binary(bytes) && !staged.is_some_and(has_crlf),
    };
    if !convert {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// The blob id git would store for `rel` with work-tree content `bytes`.
pub(crate) fn blob_id(
    repo: &Repository,
    rel: &Path,
    bytes: &[u8],
    staged: Option<Oid>,
) -> Result<Oid, git2::Error> {
    let staged_blob = staged.and_then(|id| repo.find_blob(id).ok());
    let odb = to_odb(
        repo,
        rel,
        bytes,
        staged_blob.as_ref().map(git2::Blob::content),
    );
    Oid::hash_object(ObjectType::Blob, &odb)
}

/// What to write to put `rel` back to the blob `blob` after a failed change, given its bytes now
/// (`current`): `None` when they already are that blob as git sees it (a change that changed
/// nothing, or only line endings git normalises: the person's bytes are left as they are), else
/// the blob, with CRLF line breaks when the file has them now (a CRLF file stays CRLF; the editor
/// keeps a file's line endings, so the edited file shows what the original had).
pub(crate) fn restored<'a>(
    repo: &Repository,
    rel: &Path,
    blob: &'a [u8],
    blob_id: Oid,
    current: Option<&[u8]>,
) -> Option<Cow<'a, [u8]>> {
    if let Some(now) = current {
        if self::blob_id(repo, rel, now, Some(blob_id)).ok() == Some(blob_id) {
            return None;
        }
        if has_crlf(now) && !has_crlf(blob) && !looks_binary(blob) {
            let mut out = Vec::with_capacity(blob.len() + blob.len() / 16);
            for &b in blob {
                if b == b'\n' {
                    out.push(b'\r');
                }
                out.push(b);
            }
            return Some(Cow::Owned(out));
        }
    }
    Some(Cow::Borrowed(blob))
}

/// True if a file git's status calls modified in the work tree only is, once normalised by its
/// attributes, the content and mode the index holds.
pub(crate) fn same_as_index(repo: &Repository, index: &git2::Index, rel: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(entry) = index.get_path(rel, 0) else {
        return false;
    };
    let Some(dir) = repo.workdir() else {
        return false;
    };
    let abs = dir.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&abs) else {
        return false;
    };
    let exec = meta.permissions().mode() & 0o100 != 0;
    if !meta.is_file() || exec != (entry.mode == 0o100755) || entry.mode & 0o170000 != 0o100000 {
        return false;
    }
    std::fs::read(&abs)
        .ok()
        .and_then(|bytes| blob_id(repo, rel, &bytes, Some(entry.id)).ok())
        == Some(entry.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_detection_follows_git() {
        assert!(looks_binary(b"a\0b"));
        assert!(looks_binary(b"a\rb\r\n"));
        assert!(!looks_binary(b"a\r\nb\r\n"));
        assert!(!looks_binary(b"plain"));
    }
}
