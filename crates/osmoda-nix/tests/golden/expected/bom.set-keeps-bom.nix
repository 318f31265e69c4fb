{ config, ... }:
{
  time.timeZone = "Europe/Berlin";
}
