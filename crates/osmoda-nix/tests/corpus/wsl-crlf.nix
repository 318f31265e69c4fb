{ config, lib, pkgs, ... }:

{
  # WSL host
  wsl.enable = true;
  wsl.defaultUser = "nixos";

  networking.hostName = "wsl";
  programs.git.enable = true;
  environment.systemPackages = [
    pkgs.wget
  ];
  system.stateVersion = "24.05";
}
