# Boots a machine with services.osmoda enabled and checks that every daemon is up, its
# generated config is valid, and the sandbox is what the module promises.
{ self }:

{
  name = "osmoda-daemons";

  nodes.machine = { pkgs, ... }: {
    imports = [ self.nixosModules.default ];
    services.osmoda = {
      enable = true;
      watch.watchers.agentd-alive = {
        check = { type = "agentd"; };
        intervalSecs = 5;
        actions = [ "notify" ];
      };
    };
    environment.systemPackages = [ pkgs.curl pkgs.jq ];
    virtualisation.memorySize = 2048;
  };

  testScript = { nodes, ... }:
    let cfg = nodes.machine.services.osmoda; in
    ''
      import json

      enabled = json.loads('${builtins.toJSON (builtins.filter (d: cfg.${d}.enable)
        [ "agentd" "watch" "routines" "keyd" "mesh" "egress" "voice" ])}')

      machine.start()
      machine.wait_for_unit("osmoda-config-tree.service")
      for d in enabled:
          machine.wait_for_unit(f"osmoda-{d}.service")

      with subtest("the config tree exists with its first generation"):
          machine.succeed("git -C ${cfg.configTree} log --oneline | grep -q 'Initial generation'")

      with subtest("agentd answers on its socket, group osmoda only"):
          machine.succeed("curl -sf --unix-socket ${cfg.agentd.socket} http://x/health | jq -e .")
          machine.succeed("stat -c '%G %a' /run/osmoda | grep -qx 'osmoda 770'")
          machine.fail("runuser -u nobody -- curl -sf --unix-socket ${cfg.agentd.socket} http://x/health")

      with subtest("the approval socket is root-only"):
          machine.succeed("stat -c '%U %a' ${builtins.dirOf cfg.agentd.approvalSocket} | grep -qx 'root 700'")

      with subtest("generated configs are valid and what lib renders"):
          for d in enabled:
              machine.succeed(f"test -f /etc/osmoda/{d}.json")
          machine.succeed("agentd check-config /etc/osmoda/agentd.json")
          machine.succeed("jq -e '.watchers[\"agentd-alive\"].check.type == \"agentd\"' /etc/osmoda/watch.json")

      with subtest("watch loaded the watcher"):
          machine.wait_until_succeeds(
              "curl -sf --unix-socket ${cfg.watch.socket} http://x/watcher/list | jq -e 'map(.name) | index(\"agentd-alive\")'",
              timeout=60,
          )

      with subtest("sandboxing"):
          machine.succeed("systemctl show -p PrivateNetwork osmoda-keyd.service | grep -qx PrivateNetwork=yes")
          machine.succeed("systemctl show -p ProtectSystem osmoda-keyd.service | grep -qx ProtectSystem=strict")
          machine.succeed("systemctl show -p UMask osmoda-routines.service | grep -qx UMask=0007")

      with subtest("a Ring 2 sandbox starts under agentd's unit (ProtectHostname=, its seccomp filter)"):
          out = json.loads(machine.succeed(
              "curl -sf --unix-socket ${cfg.agentd.socket} -X POST http://x/sandbox/exec "
              "-H 'content-type: application/json' "
              "-d '{\"argv\": [\"echo\", \"sandboxed\"], \"timeout_sec\": 30}'"
          ))
          assert out["ring"] == 2 and out["exit_code"] == 0, out
          assert out["stdout"] == "sandboxed\n", out
    '';
}
