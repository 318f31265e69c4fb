{ config, pkgs, ... }:
{
  powerManagement.enable = true;
  services.tlp.enable = true;
  services.tlp.settings = {
    CPU_SCALING_GOVERNOR_ON_AC = "performance";
    CPU_SCALING_GOVERNOR_ON_BAT = "powersave";
  };
  hardware.bluetooth.enable = true;
  services.printing.enable = true;
  programs.firefox.enable = true;
}
