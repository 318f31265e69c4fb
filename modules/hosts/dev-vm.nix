# QEMU development VM: Sway desktop with auto-login, the full osModa stack and the
# OpenClaw gateway running (its token is created at first boot; add a model key to
# /var/lib/osmoda/gateway.env and `systemctl restart osmoda-gateway` to chat).
#   nix build .#nixosConfigurations.osmoda-dev.config.system.build.vm
#   ./result/bin/run-osmoda-dev-vm        # then: ssh -p 2222 operator@localhost
{ lib, pkgs, modulesPath, ... }:

{
  imports = [
    "${modulesPath}/virtualisation/qemu-vm.nix"
    ./gateway-token.nix
  ];

  networking.hostName = "osmoda-dev";

  virtualisation = {
    memorySize = 4096;
    cores = 4;
    diskSize = 16384;
    graphics = true;
    # SSH from the host machine only (the operator's password is known): ssh -p 2222 operator@localhost
    forwardPorts = [ { from = "host"; host.address = "127.0.0.1"; host.port = 2222; guest.port = 22; } ];
    # Sway needs a DRM device wlroots can use: a virtio GPU, not QEMU's default VGA (std),
    # as nixpkgs' own nixos/tests/sway.nix does.
    qemu.options = [ "-vga none" "-device virtio-gpu-pci" ];
  };
  # The VM has no GPU acceleration: wlroots renders in software.
  # (greetd sources /etc/profile, which sets environment.variables, before the session command)
  environment.variables.WLR_RENDERER_ALLOW_SOFTWARE = "1";

  services.osmoda = {
    enable = true;
    # Overridden off by the flake until the bridge package exists.
    gateway.enable = lib.mkDefault true;
    # Model API keys and OPENCLAW_GATEWAY_TOKEN; create it in the VM (never in the store).
    gateway.environmentFile = "/var/lib/osmoda/gateway.env";
    watch.watchers.sshd = {
      check = { type = "systemd"; unit = "sshd.service"; };
      actions = [ "restart" "notify" ];
    };
  };

  # The desktop session, logged in automatically as the operator; after logging out, greetd
  # shows tuigreet, which starts Sway again (greetd refuses to start without a default_session
  # command).
  programs.sway = {
    enable = true;
    wrapperFeatures.gtk = true;
  };
  services.greetd = {
    enable = true;
    settings = {
      initial_session = { command = "${pkgs.sway}/bin/sway"; user = "operator"; };
      default_session = { command = "${pkgs.tuigreet}/bin/tuigreet --time --remember --cmd sway"; user = "greeter"; };
    };
  };

  users.users.operator = {
    isNormalUser = true;
    # Development VM only: a known password for the console.
    initialPassword = "osmoda";
    extraGroups = [ "wheel" "osmoda" "video" "audio" ];
  };

  services.openssh.enable = true;
  environment.systemPackages = with pkgs; [ kitty firefox git curl jq ];
  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  system.stateVersion = "24.11";
}
