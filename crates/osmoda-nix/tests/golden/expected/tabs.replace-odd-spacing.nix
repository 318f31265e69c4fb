{ config, pkgs, ... }:
{
	networking = {
		hostName   =   "t2";
		firewall.allowedTCPPorts = [ 22 ];
	};

	services.osmoda = {   enable=true;   };
	environment.etc."motd".text =
		"hello";
	boot.kernelParams = [
		"quiet"
	];
}
