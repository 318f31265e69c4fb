{ config, pkgs, lib, ... }:
let
  user = "alice";
  ports = [ 80 443 ];
in
with lib;
{
  time.timeZone = "Europe/Berlin";
  users.users.alice.description = user;
  networking.firewall.allowedTCPPorts = ports;
}
