# The config tree the SafeSwitch VM test seeds into /var/lib/osmoda/config. Its inputs are
# store paths already in the VM (substituted for the @...@ placeholders), so
# `nixos-rebuild build --flake` works without a network.
{
  inputs = {
    nixpkgs.url = "path:@nixpkgs@";
    crane.url = "path:@crane@";
    systems.url = "path:@systems@";
    flake-utils = {
      url = "path:@flakeUtils@";
      inputs.systems.follows = "systems";
    };
    osmoda = {
      url = "path:@osmoda@";
      # osmoda's own lock points at GitHub; the VM has no network.
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.crane.follows = "crane";
      inputs.flake-utils.follows = "flake-utils";
    };
  };

  outputs = { self, nixpkgs, osmoda, ... }: {
    nixosConfigurations.machine = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [
        osmoda.nixosModules.default
        # What the test driver adds to every VM: keep them, or activating a generation
        # would cut the driver's connection.
        "${nixpkgs}/nixos/modules/testing/test-instrumentation.nix"
        "${nixpkgs}/nixos/modules/virtualisation/qemu-vm.nix"
        ./configuration.nix
        ./osmoda.nix
        { system.configurationRevision = self.rev or self.dirtyRev or null; }
      ];
    };
  };
}
