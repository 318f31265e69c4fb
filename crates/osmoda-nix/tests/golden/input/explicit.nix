{ config, lib, ... }:
{
  options.my.enable = lib.mkEnableOption "mine";
  config = {
    # about the zone
    time.timeZone = "UTC";
    i18n.defaultLocale = "en_US.UTF-8";
  };
}
