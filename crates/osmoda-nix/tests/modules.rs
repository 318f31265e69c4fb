//! Modules inside files: inline modules in `imports`, a flake's `modules`, static imports, and
//! every definition of a path with its place and priority.

use osmoda_nix::{definitions, edit_in, file_info, read, AttrPath, FileKind, Op, Value};
use serde_json::json;

fn p(s: &str) -> AttrPath {
    s.parse().unwrap_or_else(|e| panic!("bad path {s}: {e}"))
}

const CONFIG: &str = r#"{ config, lib, pkgs, ... }:
{
  imports = [
    ./hardware-configuration.nix
    ({ ... }: { networking.hostName = "inline"; })
    { services.openssh.enable = lib.mkForce true; }
  ];
  networking.firewall.allowedTCPPorts = [ 22 ];
  services.openssh.settings.PermitRootLogin = "no";
}
"#;

#[test]
fn file_info_lists_inline_modules_and_imports() {
    let info = file_info(CONFIG).expect("info");
    assert_eq!(info.kind, FileKind::Module);
    assert_eq!(info.modules, 3);
    let imports: Vec<&str> = info.imports.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(imports, ["./hardware-configuration.nix"]);
    assert_eq!(info.imports[0].pos.to_string(), "4:5");
}

#[test]
fn computed_imports_are_folded_or_listed_as_unfollowed() {
    let src = r#"{ inputs, ... }:
{
  imports = [
    (./. + "/dyn.nix")
    (./hosts + "/web.nix")
    (./. + "/${host}.nix")
    (import ./make.nix { })
    ./plain.nix
    inputs.disko.nixosModules.disko
    <nixpkgs/nixos/modules/profiles/minimal.nix>
  ];
}
"#;
    let info = file_info(src).expect("info");
    let imports: Vec<&str> = info.imports.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(imports, ["././dyn.nix", "./hosts/web.nix", "./plain.nix"]);
    let unfollowed: Vec<(String, String)> = info
        .unfollowed
        .iter()
        .map(|i| (i.path.clone(), i.pos.to_string()))
        .collect();
    assert_eq!(
        unfollowed,
        [
            ("./. + \"/${host}.nix\"".to_string(), "6:6".to_string()),
            ("import ./make.nix { }".to_string(), "7:6".to_string()),
        ]
    );
}

#[test]
fn definitions_name_each_module_line_and_priority() {
    let defs = definitions(CONFIG, &p("networking.hostName")).expect("defs");
    assert_eq!(defs.len(), 1);
    assert_eq!(
        (defs[0].module, defs[0].pos.line, defs[0].exact),
        (1, 5, true)
    );

    let defs = definitions(CONFIG, &p("services.openssh.enable")).expect("defs");
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].module, 2);
    assert_eq!(defs[0].priority.as_deref(), Some("lib.mkForce"));

    // A prefix: both the inline module and the body define something below it.
    let defs = definitions(CONFIG, &p("services.openssh")).expect("defs");
    let places: Vec<(usize, usize, bool)> = defs
        .iter()
        .map(|d| (d.module, d.pos.line, d.exact))
        .collect();
    assert_eq!(places, [(0, 9, false), (2, 6, false)]);

    assert!(definitions(CONFIG, &p("time.timeZone"))
        .expect("defs")
        .is_empty());
}

#[test]
fn hidden_definitions_say_why() {
    let src =
        "{ lib, config, ... }:\n{\n  services.nginx = lib.mkIf config.x { enable = true; };\n}\n";
    let defs = definitions(src, &p("services.nginx.enable")).expect("defs");
    assert_eq!(defs.len(), 1);
    assert!(
        defs[0]
            .hidden
            .as_deref()
            .is_some_and(|r| r.contains("mkIf")),
        "{defs:?}"
    );
}

#[test]
fn an_inline_module_is_edited_in_place() {
    let op = Op::Set(p("networking.hostName"), Value::Json(json!("box")));
    let out = edit_in(CONFIG, 1, &op).expect("edit");
    assert_eq!(out.text, CONFIG.replace("\"inline\"", "\"box\""));
    let op = Op::Set(p("services.openssh.enable"), Value::Json(json!(false)));
    let out = edit_in(CONFIG, 2, &op).expect("edit");
    assert_eq!(out.kept.as_deref(), Some("lib.mkForce"));
    assert!(out
        .text
        .contains("services.openssh.enable = lib.mkForce false;"));
    assert!(edit_in(CONFIG, 7, &op).is_err());
}

#[test]
fn read_returns_nix_text_elements_and_priority() {
    let src = "{ pkgs, lib, ... }:\n{\n  environment.systemPackages = lib.mkForce (with pkgs; [ htop pkgs.git ]);\n}\n";
    let r = read(src, 0, &p("environment.systemPackages")).expect("read");
    assert_eq!(r.priority.as_deref(), Some("lib.mkForce"));
    assert_eq!(r.value, None);
    assert_eq!(
        r.elements,
        Some(vec!["htop".to_string(), "pkgs.git".to_string()])
    );
    let src =
        "{ pkgs, ... }:\n{\n  environment.systemPackages = with pkgs; [ htop pkgs.git ];\n}\n";
    let r = read(src, 0, &p("environment.systemPackages")).expect("read");
    assert_eq!(
        r.elements,
        Some(vec!["htop".to_string(), "pkgs.git".to_string()])
    );
    assert_eq!(r.nix, "with pkgs; [ htop pkgs.git ]");
}

#[test]
fn flake_modules_are_modules_and_the_flake_itself_is_not() {
    let flake = "{\n  inputs.nixpkgs.url = \"x\";\n  outputs = { nixpkgs, ... }: {\n    nixosConfigurations.a = nixpkgs.lib.nixosSystem {\n      modules = [ ./configuration.nix { system.configurationRevision = null; } ];\n    };\n  };\n}\n";
    let info = file_info(flake).expect("info");
    assert_eq!(info.kind, FileKind::Flake);
    assert_eq!(info.imports[0].path, "./configuration.nix");
    let defs = definitions(flake, &p("system.configurationRevision")).expect("defs");
    assert_eq!((defs.len(), defs[0].module), (1, 1));
}
