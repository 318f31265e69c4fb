# Managed by osModa: settings for the osModa daemons.
# Agents edit this file through agentd's config API; people may edit it too.
{ ... }:
{
  services.osmoda = {
    enable = true;
    agentd = {
      logLevel = "info";
      approval.ttlSecs = 300;
    };
    watch = {
      watchers = {
        nginx = {
          check = {
            type = "systemd";
            unit = "nginx.service";
          };
          intervalSecs = 30;
        };
      };
    };
    routines = {
      backup = {
        command = [ "restic" "backup" "/srv" ];
        schedule = "daily";
      };
    };
    egress.allowedDomains = [ "api.example.com" ];
    motd = ''
      Welcome to osModa.
        Indented line with ''${literal}
    '';
  };
}
