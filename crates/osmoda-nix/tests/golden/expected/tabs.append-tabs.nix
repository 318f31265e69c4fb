{ config, pkgs, ... }:
{
	networking = {
		hostName   =   "tabby";
		firewall.allowedTCPPorts = [ 22 ];
	};

	services.osmoda = {   enable=true;   };
	environment.etc."motd".text =
		"hello";
	boot.kernelParams = [
		"quiet"
		"console=ttyS0"
	];
}
