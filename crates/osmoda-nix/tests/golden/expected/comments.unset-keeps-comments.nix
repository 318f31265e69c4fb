/* A module with comments in every corner. */
{ config, ... }: # args
/* before body */
{ # opening brace comment
  # section: networking
  networking.hostName = /* inline */ "box"; # trailing
  networking.firewall = {
    /* nothing else */
  };

  # section: osmoda
  services.osmoda = {
    enable = true; # on
    # watch settings below
    watch = { };
  };
  # trailing comment before the closing brace
} # after the body
