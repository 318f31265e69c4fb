{ config, lib, ... }:
{
  options.my.enable = lib.mkEnableOption "mine";
  config = {
    # about the zone
    time.timeZone = "Europe/Berlin";
    i18n.defaultLocale = "en_US.UTF-8";
  };
}
