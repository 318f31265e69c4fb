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
    watch = { };
  };
  # trailing comment before the closing brace
  time.timeZone = "UTC";
} # after the body
