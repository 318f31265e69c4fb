# osModa settings of the SafeSwitch VM test (data only, like generations/osmoda.nix).
{ ... }:

{
  services.osmoda = {
    enable = true;
    watch.safeSwitch.ttlSecs = 15;
  };
}
