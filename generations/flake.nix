# The machine's configuration as a flake. osModa's agentd keeps this directory
# in git: every change, by a person or by the agent, becomes one commit (a
# "generation"), and `system.configurationRevision` ties the running NixOS
# system back to that commit.
{
  description = "osModa machine configuration";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    osmoda = {
      url = "github:osmoda/osmoda";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, osmoda, ... }: {
    nixosConfigurations.osmoda = nixpkgs.lib.nixosSystem {
      # Set this to the machine's platform (for example "aarch64-linux").
      system = "x86_64-linux";
      modules = [
        osmoda.nixosModules.default
        ./configuration.nix
        { system.configurationRevision = self.rev or self.dirtyRev or null; }
      ];
    };
  };
}
