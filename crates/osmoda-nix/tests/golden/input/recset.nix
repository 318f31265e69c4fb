{ ... }:
{
  services.osmoda.watch.watchers = rec {
    web-http = { check = { type = "http"; url = "http://127.0.0.1/"; }; intervalSecs = 30; };
    web-https = web-http // { check.url = "https://127.0.0.1/"; };
    db = { check = { type = "tcp"; port = 5432; }; };
  };
}
