{ config, pkgs, ... }:
{
	networking = {
		hostName   =   "tabby";
		firewall.allowedTCPPorts = [ 22 ];
		firewall.enable = true;
	};

	services.osmoda = {   enable=true;   };
	environment.etc."motd".text =
		"hello";
	boot.kernelParams = [
		"quiet"
	];
}
