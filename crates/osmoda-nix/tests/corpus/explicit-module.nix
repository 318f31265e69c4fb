{ config, lib, pkgs, ... }:
let
  cfg = config.my.monitoring;
in
{
  options.my.monitoring.enable = lib.mkEnableOption "monitoring";
  config = {
    services.prometheus.enable = true;
    services.prometheus.port = 9090;
    services.prometheus.exporters.node = {
      enable = true;
      enabledCollectors = [ "systemd" ];
    };
  };
}
