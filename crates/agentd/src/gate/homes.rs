//! The home directories the configuration tree gives its users, for the login files of
//! `/fs/write` and `/system/exec` (`api::secrets::Homes`): evaluated from `HEAD` with the gate's
//! evaluator, once per `HEAD` commit.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::eval::{self, Files};
use super::merge::is_undecidable;
use crate::api::secrets::Homes;

/// The last tree evaluated: its directory, `HEAD` commit and homes.
static CACHE: std::sync::Mutex<Option<(PathBuf, String, Homes)>> = std::sync::Mutex::new(None);

/// The homes of `users.users` in the tree at `dir`'s `HEAD`: each user's `home`, else
/// `/home/<name>` for a normal user and `/var/empty` otherwise (NixOS's defaults). A user (or
/// `users.users`) whose home cannot be decided, or a tree that cannot be evaluated, sets
/// `undecided`.
pub(crate) fn of_tree(dir: &Path) -> Homes {
    let undecided = || Homes {
        dirs: Vec::new(),
        undecided: true,
    };
    let Ok(rev) = super::snapshot::resolve(dir, "HEAD") else {
        // No commit yet: no user of the tree exists on any generation.
        return Homes::default();
    };
    {
        let cache = CACHE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((d, r, h)) = cache.as_ref() {
            if d == dir && *r == rev {
                return h.clone();
            }
        }
    }
    let Ok(files) = super::snapshot::at(dir, &rev) else {
        return undecided();
    };
    let homes = match evaluate(&files) {
        Some(h) => h,
        None => undecided(),
    };
    *CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some((dir.to_path_buf(), rev, homes.clone()));
    homes
}

fn evaluate(files: &Files) -> Option<Homes> {
    // Every module of the tree is a root: a user defined in any of them may be imported.
    let roots: Vec<PathBuf> = files.keys().cloned().collect();
    let e = eval::evaluate(files, &roots).ok()?;
    Some(homes(&e.tree))
}

/// The homes of an evaluated tree's `users.users`.
pub(super) fn homes(tree: &Value) -> Homes {
    let mut h = Homes::default();
    let users = match tree.pointer("/users/users") {
        None => return h,
        Some(Value::Object(m)) if !is_undecidable(&Value::Object(m.clone())) => m,
        Some(_) => {
            h.undecided = true;
            return h;
        }
    };
    for (name, u) in users {
        if is_undecidable(u) {
            h.undecided = true;
            continue;
        }
        match u.get("home") {
            Some(Value::String(s)) => h.add(Path::new(s)),
            Some(Value::Object(p)) if p.get("__osmoda").and_then(Value::as_str) == Some("path") => {
                match p.get("path").and_then(Value::as_str) {
                    Some(s) => h.add(Path::new(s)),
                    None => h.undecided = true,
                }
            }
            None | Some(Value::Null) => match u.get("isNormalUser") {
                Some(Value::Bool(true)) => h.add(&Path::new("/home").join(name)),
                None | Some(Value::Bool(false)) => h.add(Path::new("/var/empty")),
                Some(_) => {
                    h.add(&Path::new("/home").join(name));
                    h.add(Path::new("/var/empty"));
                }
            },
            Some(_) => h.undecided = true,
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn homes_follow_nixos_defaults_and_undecidable_ones_are_marked() {
        let t = json!({"users": {"users": {
            "alice": {"isNormalUser": true},
            "svc": {"isSystemUser": true, "home": "/var/lib/svc"},
            "nobody2": {},
        }}});
        let h = homes(&t);
        assert!(!h.undecided);
        for d in ["/home/alice", "/var/lib/svc", "/var/empty"] {
            assert!(h.dirs.contains(&PathBuf::from(d)), "{d}: {h:?}");
        }
        let t = json!({"users": {"users": {"x": {"home": {"__osmoda": "undecidable"}}}}});
        assert!(homes(&t).undecided);
        let t = json!({"users": {"users": {"__osmoda": "undecidable"}}});
        assert!(homes(&t).undecided);
        assert_eq!(homes(&json!({})), Homes::default());
    }
}
