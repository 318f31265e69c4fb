{ config, pkgs, ... }:
{
	networking = {
		hostName   =   "tabby";
		firewall.allowedTCPPorts = [ 22 ];
		interfaces.eth0 = {
			useDHCP = true;
		};
	};

	services.osmoda = {   enable=true;   };
	environment.etc."motd".text =
		"hello";
	boot.kernelParams = [
		"quiet"
	];
}
