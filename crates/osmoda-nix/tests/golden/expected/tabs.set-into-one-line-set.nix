{ config, pkgs, ... }:
{
	networking = {
		hostName   =   "tabby";
		firewall.allowedTCPPorts = [ 22 ];
	};

	services.osmoda = {   enable=true;   watch.enable = false; };
	environment.etc."motd".text =
		"hello";
	boot.kernelParams = [
		"quiet"
	];
}
