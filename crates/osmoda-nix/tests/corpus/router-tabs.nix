{ config, pkgs, ... }:
{
	networking = {
		hostName = "router";
		nat.enable = true;
		nat.externalInterface = "wan0";
		nat.internalInterfaces = [ "lan0" ];
		firewall.allowedUDPPorts = [ 53 67 ];
	};
	services.dnsmasq.enable = true;
	services.dnsmasq.settings = {
		domain-needed = true;
		server = [ "1.1.1.1" ];
	};
}
