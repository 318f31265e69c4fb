{ pkgs, ... }: {
  virtualisation.docker.enable = true;
  virtualisation.oci-containers.backend = "docker";
  virtualisation.oci-containers.containers = {
    grafana = {
      image = "grafana/grafana:10.4.0";
      ports = [ "3000:3000" ];
      environment = { GF_SECURITY_ADMIN_USER = "admin"; };
    };
  };
  users.users.deploy = { isNormalUser = true; extraGroups = [ "docker" ]; openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3Nza example" ]; };
}
