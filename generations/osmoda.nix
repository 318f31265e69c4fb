# osModa settings. The agent edits this file through agentd (rnix, one git
# commit per change); you can edit it too. Keep it data only: literal values,
# no `let`, no `with`, no function calls, so it can be read and evaluated on
# its own.
{ ... }:

{
  services.osmoda = {
    enable = true;

    # Restart sshd if it stops; roll back the last generation if that does not
    # help; tell the operator either way.
    watch.watchers.sshd = {
      check = {
        type = "systemd";
        unit = "sshd.service";
      };
      intervalSecs = 30;
      actions = [ "restart" "rollback" "notify" ];
    };

    # Every five minutes, record how full the root filesystem is.
    routines.disk-usage = {
      trigger = {
        type = "interval";
        seconds = 300;
      };
      action = {
        type = "command";
        command = [ "df" "--output=pcent" "/" ];
      };
    };
  };
}
