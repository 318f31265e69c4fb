/* A module with comments in every corner. */
{ config, ... }: # args
/* before body */
{ # opening brace comment
  # section: networking
  networking.hostName = /* inline */ "box"; # trailing
  networking.firewall = {
    # allowed ports
    allowedTCPPorts = [
      22 # ssh
      # 80 (disabled)
      443
    ];
    /* nothing else */
  };

  # section: osmoda
  services.osmoda = {
    enable = true; # on
    # watch settings below
    watch = {
      watchers.web = {
        check = {
          type = "http";
          url = "http://127.0.0.1/";
        };
      };
    };
  };
  # trailing comment before the closing brace
} # after the body
