# services.osmoda.<daemon> -> the crate (and binary) that implements it. Read by flake.nix
# (packages) and modules/flake-module.nix (daemons whose crate is missing are off by default).
{
  agentd = "agentd";
  watch = "osmoda-watch";
  routines = "osmoda-routines";
  keyd = "osmoda-keyd";
  mesh = "osmoda-mesh";
  egress = "osmoda-egress";
  voice = "osmoda-voice";
}
