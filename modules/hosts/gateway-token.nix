# The OpenClaw gateway authenticates every caller with OPENCLAW_GATEWAY_TOKEN from
# services.osmoda.gateway.environmentFile, and does not start without one. This creates that
# file on the machine at first boot (0600 root, a random 256-bit token; never in the Nix store)
# when it does not exist yet, so the gateway runs from the first boot. The operator adds model
# API keys to the same file (ANTHROPIC_API_KEY=..., OPENAI_API_KEY=...) and restarts
# osmoda-gateway; an existing file is never touched.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.osmoda.gateway;
in
{
  config = lib.mkIf (config.services.osmoda.enable && cfg.enable && cfg.environmentFile != null) {
    systemd.services.osmoda-gateway-token = {
      description = "Create the OpenClaw gateway's token file if it is missing";
      wantedBy = [ "osmoda-gateway.service" ];
      before = [ "osmoda-gateway.service" "osmoda-routines.service" "osmoda-voice.service" ];
      unitConfig.ConditionPathExists = "!${cfg.environmentFile}";
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        UMask = "0077";
        PrivateNetwork = true;
        ProtectHome = true;
      };
      script = ''
        mkdir -p "$(dirname ${lib.escapeShellArg cfg.environmentFile})"
        tmp=$(mktemp ${lib.escapeShellArg "${cfg.environmentFile}.XXXXXX"})
        printf 'OPENCLAW_GATEWAY_TOKEN=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$tmp"
        mv -n "$tmp" ${lib.escapeShellArg cfg.environmentFile}
        rm -f "$tmp"
      '';
    };
    systemd.services.osmoda-gateway = {
      requires = [ "osmoda-gateway-token.service" ];
      after = [ "osmoda-gateway-token.service" ];
    };
  };
}
