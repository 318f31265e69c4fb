//! The local backend against a real tree, the real `lib/` and the real Nix evaluator.

use std::path::Path;
use std::sync::Arc;

use osmoda_generations::{Actor, Tree};

use super::*;
use crate::runner::ProcessRunner;

const BASE: &str = "{ ... }:\n{\n  services.osmoda = {\n    enable = true;\n  };\n}\n";

struct Fixture {
    dir: tempfile::TempDir,
    tree: Tree,
    backend: LocalBackend,
}

fn actor() -> Actor {
    Actor::new("Test", "t@example.org")
}

fn lib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tree_dir = dir.path().join("tree");
    let tree = Tree::init(
        &tree_dir,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations"),
        &actor(),
    )
    .unwrap();
    std::fs::write(tree_dir.join("osmoda.nix"), BASE).unwrap();
    tree.commit_worktree(&actor(), "base", None).unwrap();
    let ct = Arc::new(ConfigTree::open(&tree_dir).unwrap());
    let backend = LocalBackend::new(
        ct,
        Arc::new(ProcessRunner),
        &dir.path().join("state"),
        dir.path().join("etc"),
        lib_dir(),
    )
    .unwrap();
    Fixture { dir, tree, backend }
}

impl Fixture {
    fn commit(&self, file: &str, text: &str) -> String {
        std::fs::write(self.tree.dir().join(file), text).unwrap();
        self.tree
            .commit_worktree(&actor(), "change", None)
            .unwrap()
            .rev
    }
}

#[tokio::test]
async fn build_activate_and_swap_back() {
    let f = fixture();
    let b = &f.backend;
    assert_eq!(b.current().await.unwrap(), None);
    let g1 = b.build("1", &f.tree.head().unwrap()).await.unwrap();
    assert!(g1.warnings.is_empty(), "{:?}", g1.warnings);
    for d in osmoda_config::DAEMONS {
        osmoda_config::check_config(d, &Path::new(&g1.artifact).join(format!("{d}.json"))).unwrap();
    }
    b.activate("1", &g1.artifact).await.unwrap();
    assert_eq!(
        b.current().await.unwrap().as_deref(),
        Some(g1.artifact.as_str())
    );
    assert!(f.dir.path().join("etc/osmoda/agentd.json").is_file());

    let rev2 = f.commit(
        "osmoda.nix",
        &BASE.replace(
            "enable = true;",
            "enable = true;\n    watch.safeSwitch.ttlSecs = 7;",
        ),
    );
    let g2 = b.build("2", &rev2).await.unwrap();
    assert_ne!(g1.artifact, g2.artifact);
    assert!(
        g2.artifact.ends_with("/2"),
        "numbered generations: {}",
        g2.artifact
    );
    b.activate("2", &g2.artifact).await.unwrap();
    let watch = std::fs::read_to_string(f.dir.path().join("etc/osmoda/watch.json")).unwrap();
    assert!(watch.contains("\"ttl_secs\": 7"), "{watch}");
    b.reactivate("2", Some(&g1.artifact)).await.unwrap();
    assert_eq!(
        b.current().await.unwrap().as_deref(),
        Some(g1.artifact.as_str())
    );
    // A record naming a directory this backend did not render re-activates nothing: one
    // elsewhere with a generation file, one planted beside the generations, a numbered symlink.
    let planted = f.dir.path().join("evil");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join(META_FILE), "{}").unwrap();
    let gens = Path::new(&g1.artifact).parent().unwrap().to_path_buf();
    std::fs::create_dir_all(gens.join("x1")).unwrap();
    std::fs::write(gens.join("x1").join(META_FILE), "{}").unwrap();
    std::os::unix::fs::symlink(&planted, gens.join("99")).unwrap();
    for p in [
        planted.display().to_string(),
        gens.join("x1").display().to_string(),
        gens.join("99").display().to_string(),
        format!("{}/../evil", g1.artifact),
    ] {
        let e = b.reactivate("2", Some(&p)).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("not one of osmoda-watch's generations"),
            "{p}: {e}"
        );
        assert_eq!(
            b.current().await.unwrap().as_deref(),
            Some(g1.artifact.as_str()),
            "{p}"
        );
    }
    b.reactivate("2", None).await.unwrap();
    assert_eq!(b.current().await.unwrap(), None);
    // No temporary links or build dirs are left behind.
    let etc: Vec<_> = std::fs::read_dir(f.dir.path().join("etc"))
        .unwrap()
        .flatten()
        .collect();
    assert!(etc.is_empty(), "{etc:?}");
}

#[tokio::test]
async fn says_what_it_cannot_apply() {
    let f = fixture();
    let rev = f.tree.head().unwrap();
    let g = f.backend.build("1", &rev).await.unwrap();
    f.tree.tag_deployed(&rev).unwrap();
    f.backend.activate("1", &g.artifact).await.unwrap();
    let text = BASE.replace(
        "enable = true;",
        "enable = true;\n    stateDir = \"/srv/osmoda\";\n    keyd.socket = \"/run/k.sock\";",
    );
    f.commit("osmoda.nix", &text);
    let conf = std::fs::read_to_string(f.tree.dir().join("configuration.nix")).unwrap();
    let rev = f.commit(
        "configuration.nix",
        &format!("{conf}\n# a comment a person added\n"),
    );
    let g = f.backend.build("2", &rev).await.unwrap();
    let w = g.warnings.join("\n");
    assert!(
        w.contains("services.osmoda.stateDir cannot be applied by the local backend"),
        "{w}"
    );
    assert!(
        w.contains("services.osmoda.keyd.socket cannot be applied"),
        "{w}"
    );
    assert!(
        w.contains("configuration.nix changed; the local backend applies only services.osmoda"),
        "{w}"
    );
}

#[tokio::test]
async fn invalid_settings_fail_the_build_and_touch_nothing() {
    let f = fixture();
    let text = BASE.replace(
        "enable = true;",
        "enable = true;\n    watch.watchers.w = { check = { type = \"agentd\"; }; intervalSecs = 0; actions = [ ]; };",
    );
    let rev = f.commit("osmoda.nix", &text);
    let e = f.backend.build("1", &rev).await.unwrap_err().to_string();
    assert!(
        e.contains("invalid watch.json") && e.contains("interval_secs"),
        "{e}"
    );
    let gens: Vec<_> = std::fs::read_dir(f.dir.path().join("state/generations"))
        .unwrap()
        .flatten()
        .collect();
    assert!(gens.is_empty(), "nothing is left behind: {gens:?}");
    assert_eq!(f.backend.current().await.unwrap(), None);

    let broken = f.commit(
        "osmoda.nix",
        "{ ... }: { services.osmoda = { enable = true; watch = 3; }; }\n",
    );
    let e = f.backend.build("2", &broken).await.unwrap_err().to_string();
    assert!(
        e.contains("rendering osmoda.nix") || e.contains("invalid"),
        "{e}"
    );
}

#[tokio::test]
async fn refuses_a_real_directory_and_a_missing_lib() {
    let f = fixture();
    std::fs::create_dir_all(f.dir.path().join("etc/osmoda")).unwrap();
    let g = f.backend.build("1", &f.tree.head().unwrap()).await.unwrap();
    let e = f
        .backend
        .activate("1", &g.artifact)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a symlink") || e.contains("real file or directory"),
        "{e}"
    );
    assert!(f.dir.path().join("etc/osmoda").is_dir());
    let e = f
        .backend
        .activate("1", "/nonexistent")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a rendered generation"), "{e}");

    let ct = Arc::new(ConfigTree::open(f.tree.dir()).unwrap());
    let e = LocalBackend::new(
        ct,
        Arc::new(ProcessRunner),
        f.dir.path(),
        f.dir.path().join("e"),
        f.dir.path().into(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--lib-dir"), "{e}");
}

/// Every file under `dir` (following no symlinks), with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&p)),
            Ok(t) if t.is_file() => out.push((p.clone(), std::fs::read(&p).unwrap_or_default())),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn rendering_cannot_read_files_outside_the_tree() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let secret = f.dir.path().join("secret");
    std::fs::write(&secret, "hunter2-osmoda-secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = &f.backend;
    let ok = b.build("1", &f.tree.head().unwrap()).await.unwrap();
    b.activate("1", &ok.artifact).await.unwrap();
    // Rendered like the module writes /etc/osmoda/*.json.
    for d in osmoda_config::DAEMONS {
        let mode = std::fs::metadata(Path::new(&ok.artifact).join(format!("{d}.json")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, RENDERED_MODE, "{d}.json");
    }
    for read in [
        format!("builtins.readFile {}", secret.display()),
        format!("builtins.readFile \"{}\"", secret.display()),
        format!("builtins.readFile (/. + \"{}\")", secret.display()),
        format!("toString (import {})", secret.display()),
    ] {
        let text = format!(
            "{{ ... }}:\n{{\n  services.osmoda.watch.watchers.leak.check = {{ type = \"command\"; command = [ ({read}) ]; }};\n}}\n"
        );
        let rev = f.commit("osmoda.nix", &text);
        let e = b.build("2", &rev).await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{read}: {e}");
        assert!(
            e.contains("restricted mode") || e.contains("forbidden"),
            "{read}: {e}"
        );
        assert!(!e.contains(".eval-"), "no temporary path in the error: {e}");
    }
    for (path, bytes) in files_under(f.dir.path()) {
        if path != secret {
            assert!(
                !String::from_utf8_lossy(&bytes).contains("hunter2"),
                "{} holds the secret",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn the_render_runs_as_a_capped_evaluator() {
    let f = fixture();
    let rec = Arc::new(crate::runner::RecordingRunner::default());
    let backend = LocalBackend::new(
        Arc::new(ConfigTree::open(f.tree.dir()).unwrap()),
        Arc::clone(&rec) as Arc<dyn Runner>,
        &f.dir.path().join("state2"),
        f.dir.path().join("etc2"),
        lib_dir(),
    )
    .unwrap();
    // The recorded runner answers nothing, so the build fails; what matters is how it ran.
    let _ = backend.build("1", &f.tree.head().unwrap()).await;
    let calls = rec.calls.lock().unwrap().clone();
    let render = calls
        .iter()
        .find(|c| c.argv.first().map(String::as_str) == Some("nix-instantiate"))
        .expect("a nix-instantiate call");
    assert_eq!(render.caps, Some(Caps::RENDER));
}
