{ config, ... }:
{
  time.timeZone = "UTC";
}
