//! `agentctl config append|remove|get` and `commit -m/--reason` against a real agentd.

mod common;

use common::{start, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_remove_and_get_show_where_an_option_is_defined() {
    let env = start().await;
    let o = env
        .ctl(&[
            "config",
            "append",
            "environment.systemPackages",
            "--nix",
            "jq",
            "--reason",
            "json tools",
        ])
        .await;
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = env
        .ctl(&[
            "config",
            "remove",
            "environment.systemPackages",
            "--nix",
            "pkgs.htop",
            "--reason",
            "unused",
        ])
        .await;
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = env
        .ctl(&["config", "get", "environment.systemPackages"])
        .await;
    let out = stdout(&o);
    assert_eq!(out, "git\ncurl\njq\n");
    let o = env
        .ctl(&["--json", "config", "get", "environment.systemPackages"])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["definitions"][0]["file"], "configuration.nix");
    assert_eq!(v["definitions"][0]["line"], 35);

    let o = env
        .ctl(&[
            "config",
            "append",
            "networking.firewall.allowedTCPPorts",
            "8080",
            "--reason",
            "web",
        ])
        .await;
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = env
        .ctl(&["config", "get", "networking.firewall.allowedTCPPorts"])
        .await;
    assert!(stdout(&o).contains("22,\n  8080"), "{}", stdout(&o));

    // A person's hand edit, recorded with `-m` (git's spelling) or `--reason`.
    let conf = env.tree().join("configuration.nix");
    let text = std::fs::read_to_string(&conf).expect("read");
    std::fs::write(&conf, text.replace("\"osmoda\"", "\"box\"")).expect("write");
    let o = env
        .ctl(&["config", "commit", "-m", "rename the host"])
        .await;
    assert!(o.status.success(), "{}", common::stderr(&o));
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf)
            .expect("read")
            .replace("\"box\"", "\"box2\""),
    )
    .expect("write");
    let o = env.ctl(&["config", "commit", "--reason", "again"]).await;
    assert!(o.status.success(), "{}", common::stderr(&o));
}
