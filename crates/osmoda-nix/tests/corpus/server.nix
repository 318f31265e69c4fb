{ config, pkgs, ... }:
with pkgs;
{
  imports = [
    ./hardware-configuration.nix
    ({ ... }: { networking.hostName = "web1"; })
  ];

  boot.loader.grub.enable = true;
  boot.loader.grub.device = "/dev/sda";

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      PermitRootLogin = "no";
    };
  };

  services.nginx = {
    enable = true;
    recommendedGzipSettings = true;
    virtualHosts."example.org" = {
      enableACME = true;
      forceSSL = true;
      root = "/var/www/example";
    };
  };

  security.acme.acceptTerms = true;
  security.acme.defaults.email = "ops@example.org";

  networking.firewall.allowedTCPPorts = [
    22
    80
    443 # https
  ];

  system.stateVersion = "23.11";
}
