{ config, pkgs, ... }:

{
  services = {
    openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        PermitRootLogin = "no";
      };
    };

    osmoda = {
      enable = true;
      agentd = {
        logLevel = "info";
        approval.ttlSecs = 600;
      };
    };
  };

  users.users = {
    alice = {
      isNormalUser = true;
      openssh.authorizedKeys.keys = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
      ];
    };
  };
}
