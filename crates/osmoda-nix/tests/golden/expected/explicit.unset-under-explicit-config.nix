{ config, lib, ... }:
{
  options.my.enable = lib.mkEnableOption "mine";
  config = {
    i18n.defaultLocale = "en_US.UTF-8";
  };
}
