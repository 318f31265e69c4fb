# The declarative loop end to end on real NixOS: add a watcher through agentd's config API
# (a git commit in the tree), apply it with SafeSwitch (nixos-rebuild build +
# switch-to-configuration test + health checks + commit), then apply a generation whose
# health check fails and see it rolled back to the recorded previous system.
{ self }:

{
  name = "osmoda-safeswitch";

  nodes.machine = { pkgs, ... }: {
    imports = [ self.nixosModules.default ./tree/configuration.nix ];
    # Seed the tree with this test's flake, its inputs pinned to store paths in the VM.
    services.osmoda.configTreeTemplate = pkgs.runCommand "osmoda-test-tree" { } ''
      cp -r ${./tree} $out
      chmod -R u+w $out
      substituteInPlace $out/flake.nix \
        --replace-fail @nixpkgs@ ${pkgs.path} \
        --replace-fail @crane@ ${self.inputs.crane} \
        --replace-fail @flakeUtils@ ${self.inputs.flake-utils} \
        --replace-fail @systems@ ${self.inputs.flake-utils.inputs.systems} \
        --replace-fail @osmoda@ ${self}
    '';
  };

  testScript = { nodes, ... }:
    let
      cfg = nodes.machine.services.osmoda;
      watch = "curl -sf --unix-socket ${cfg.watch.socket}";
    in
    ''
      import json

      def begin(body):
          out = machine.succeed(f"${watch} -X POST http://x/switch/begin -H 'content-type: application/json' -d '{json.dumps(body)}'")
          return json.loads(out)["id"]

      def wait_state(sid, state):
          machine.wait_until_succeeds(
              f"${watch} http://x/switch/status/{sid} | jq -e '.state == \"{state}\"'",
              timeout=900,
          )

      machine.start()
      machine.wait_for_unit("osmoda-agentd.service")
      machine.wait_for_unit("osmoda-watch.service")
      machine.succeed("git -C ${cfg.configTree} log --oneline | grep -q 'Initial generation'")
      machine.succeed("test -f ${cfg.configTree}/flake.lock")

      with subtest("before: no web watcher"):
          machine.fail("jq -e '.watchers.web' /etc/osmoda/watch.json")
          system_before = machine.succeed("readlink -f /run/current-system").strip()

      with subtest("add a watcher through agentd's config API: one commit"):
          commits = int(machine.succeed("git -C ${cfg.configTree} rev-list --count HEAD"))
          machine.succeed(
              "agentctl config set services.osmoda.watch.watchers.web "
              "'{\"check\": {\"type\": \"systemd\", \"unit\": \"osmoda-agentd.service\"}, \"intervalSecs\": 5, \"actions\": [\"notify\"]}' "
              "--reason 'watch agentd from the VM test'"
          )
          assert int(machine.succeed("git -C ${cfg.configTree} rev-list --count HEAD")) == commits + 1
          machine.succeed("git -C ${cfg.configTree} log -1 --format=%B | grep -q 'watch agentd from the VM test'")
          machine.succeed("git -C ${cfg.configTree} show --name-only --format= HEAD | grep -qx osmoda.nix")

      with subtest("a SafeSwitch whose checks pass commits"):
          sid = begin({"plan": "add the web watcher", "ttl_secs": 15, "health_checks": [{"type": "agentd"}]})
          wait_state(sid, "committed")
          machine.succeed(f"agentctl switch status {sid}")  # exit 0: committed
          machine.succeed("jq -e '.watchers.web.check.unit == \"osmoda-agentd.service\"' /etc/osmoda/watch.json")
          system_committed = machine.succeed("readlink -f /run/current-system").strip()
          assert system_committed != system_before, "the committed generation is active"
          assert machine.succeed("readlink -f /nix/var/nix/profiles/system").strip() == system_committed, "and the boot default"
          machine.wait_until_succeeds("${watch} http://x/watcher/list | jq -e 'map(.name) | index(\"web\")'", timeout=60)

      with subtest("a SafeSwitch whose check fails rolls back"):
          machine.succeed(
              "agentctl config set services.osmoda.watch.watchers.doomed "
              "'{\"check\": {\"type\": \"agentd\"}, \"intervalSecs\": 5, \"actions\": [\"notify\"]}' "
              "--reason 'a generation the test expects to roll back'"
          )
          sid = begin({"plan": "doomed", "ttl_secs": 10, "health_checks": [{"type": "systemd", "unit": "does-not-exist.service"}]})
          wait_state(sid, "rolled-back")
          code, out = machine.execute(f"agentctl switch status {sid}")
          assert code == 3, f"agentctl exits 3 for a rolled-back switch, not {code}: {out}"
          assert machine.succeed("readlink -f /run/current-system").strip() == system_committed, "previous system re-activated"
          assert machine.succeed("readlink -f /nix/var/nix/profiles/system").strip() == system_committed, "boot default untouched"
          machine.fail("jq -e '.watchers.doomed' /etc/osmoda/watch.json")
          machine.succeed("git -C ${cfg.configTree} log -1 --format=%s | grep -qi revert")
          machine.succeed("jq -e '.watchers.web' /etc/osmoda/watch.json")
    '';
}
