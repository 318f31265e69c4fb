# The OpenClaw gateway authenticates every caller with OPENCLAW_GATEWAY_TOKEN from
# services.osmoda.gateway.environmentFile, and does not start without one. This creates that
# file on the machine at first boot (0600 root, a random 256-bit token; never in the Nix store)
# when it does not exist yet, so the gateway runs from the first boot. The operator adds model
# API keys to the same file (ANTHROPIC_API_KEY=..., OPENAI_API_KEY=...) and restarts
# osmoda-gateway; an existing file is never touched.
#
# osmoda-routines and osmoda-voice get the token alone (their `gatewayTokenFile`, a systemd
# credential), never the environment file with the model keys: the same oneshot keeps
# `gateway-token` beside it, taken from the environment file's OPENCLAW_GATEWAY_TOKEN line when
# that file exists already.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.osmoda.gateway;
  tokenFile = "${dirOf cfg.environmentFile}/gateway-token";
in
{
  config = lib.mkIf (config.services.osmoda.enable && cfg.enable && cfg.environmentFile != null) {
    services.osmoda.routines.gatewayTokenFile = lib.mkDefault tokenFile;
    services.osmoda.voice.gatewayTokenFile = lib.mkDefault tokenFile;
    systemd.services.osmoda-gateway-token = {
      description = "Create the OpenClaw gateway's token files if they are missing";
      wantedBy = [ "osmoda-gateway.service" "osmoda-routines.service" "osmoda-voice.service" ];
      before = [ "osmoda-gateway.service" "osmoda-routines.service" "osmoda-voice.service" ];
      # Either file missing (the token-only one on a machine made before it existed).
      unitConfig.ConditionPathExists = [ "|!${cfg.environmentFile}" "|!${tokenFile}" ];
      path = [ pkgs.coreutils pkgs.gnused ];
      serviceConfig = {
        Type = "oneshot";
        UMask = "0077";
        PrivateNetwork = true;
        ProtectHome = true;
      };
      script = ''
        env=${lib.escapeShellArg cfg.environmentFile}
        mkdir -p "$(dirname "$env")"
        if [ ! -e "$env" ]; then
          tmp=$(mktemp "$env.XXXXXX")
          printf 'OPENCLAW_GATEWAY_TOKEN=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$tmp"
          mv -n "$tmp" "$env"
          rm -f "$tmp"
        fi
        token=$(sed -n 's/^OPENCLAW_GATEWAY_TOKEN=//p' "$env" | head -n 1)
        if [ -n "$token" ] && [ ! -e ${lib.escapeShellArg tokenFile} ]; then
          tmp=$(mktemp ${lib.escapeShellArg "${tokenFile}.XXXXXX"})
          printf '%s\n' "$token" > "$tmp"
          mv -n "$tmp" ${lib.escapeShellArg tokenFile}
          rm -f "$tmp"
        fi
      '';
    };
    systemd.services.osmoda-gateway = {
      requires = [ "osmoda-gateway-token.service" ];
      after = [ "osmoda-gateway-token.service" ];
    };
  };
}
