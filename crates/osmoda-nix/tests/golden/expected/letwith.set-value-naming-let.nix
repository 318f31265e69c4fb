{ config, pkgs, lib, ... }:
let
  user = "alice";
  ports = [ 80 443 ];
in
with lib;
{
  time.timeZone = "Europe/Paris";
  users.users.alice.description = "Alice";
  networking.firewall.allowedTCPPorts = ports;
}
