{ ... }:
{
  services.osmoda.enable = true;
  services.osmoda.watch.watchers = rec {
    web = { check = { type = "http"; url = "http://127.0.0.1/"; }; intervalSecs = 30; };
    web-tls = web // { check.url = "https://127.0.0.1/"; };
    db = { check = { type = "tcp"; host = "127.0.0.1"; port = 5432; }; intervalSecs = 60; };
  };
  services.osmoda.routines.backup = {
    schedule = "daily";
    command = [ "restic" "backup" "/srv" ];
  };
}
