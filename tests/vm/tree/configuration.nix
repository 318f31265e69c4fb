# Machine settings shared by the SafeSwitch VM test node and the tree it seeds, so the
# generations SafeSwitch builds inside the VM match the VM itself.
{ lib, pkgs, ... }:

{
  imports = [ ./osmoda.nix ];

  networking.hostName = "machine";
  system.stateVersion = "24.11";

  # Building a generation inside the VM must not need a network: every build input of
  # this system is in the VM's store, and there are no substituters.
  system.includeBuildDependencies = true;
  nix.settings = {
    substituters = lib.mkForce [ ];
    experimental-features = [ "nix-command" "flakes" ];
  };

  virtualisation = {
    memorySize = 3072;
    diskSize = 8192;
    writableStore = true;
  };

  # In the tree too, so they survive the switches the test makes.
  environment.systemPackages = [ pkgs.git pkgs.curl pkgs.jq pkgs.osmoda.agentctl ];
}
