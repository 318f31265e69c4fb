#!/usr/bin/env bash
# Turn an existing NixOS machine into osModa, in one command:
#
#   sudo scripts/install.sh            # show the plan, ask, then do it
#   sudo scripts/install.sh --yes      # do not ask
#
# What it does (nothing is changed before you answer yes; a refusal changes nothing):
# 1. Copies /etc/nixos (without its .git) into osModa's git-tracked tree, /var/lib/osmoda/config,
#    and commits it unchanged: the tree's history starts with "imported from /etc/nixos".
# 2. Adds osModa in a second commit, leaving your files as they are:
#    - osmoda.nix: `services.osmoda.enable = true;` (the daemons) and the agent gateway
#      (`gateway.enable = true;` with its token in /var/lib/osmoda/gateway.env, a 0600 root file
#      this script creates when it is missing; add a model API key there, e.g.
#      ANTHROPIC_API_KEY=..., then `systemctl restart osmoda-gateway`), and the token alone in
#      /var/lib/osmoda/gateway-token (0600, created when missing from gateway.env's
#      OPENCLAW_GATEWAY_TOKEN line, as the flake's hosts do: modules/hosts/gateway-token.nix)
#      as `routines.gatewayTokenFile` and `voice.gatewayTokenFile`: those daemons get the
#      token, never the file with the model keys;
#    - a flake machine: the osModa flake input, and osModa's module + ./osmoda.nix in the
#      `modules` list of flake.nix (a flake it cannot edit safely is refused, with what to add);
#    - a channel machine: a new flake.nix with nixpkgs at this machine's release branch, osModa,
#      and ./configuration.nix + ./osmoda.nix as the host's modules (osModa applies
#      configurations as flakes; configuration.nix itself is not touched);
#    - flake.lock, committed with the change (`nix flake lock`, so it needs the network): a
#      build never writes it into the tree afterwards. nixpkgs is locked at the revision of the
#      system running this script (`nixos-version --revision`: the machine itself, or the
#      installer ISO with --root) when it gives one; an existing flake.lock keeps its inputs.
# 3. Applies it like SafeSwitch (osmoda-watch is not running yet, so the script does it): build,
#    activate without making it the boot default, probe sshd (if it ran before) and agentd for
#    up to --ttl seconds, then make it the boot default, or roll back to the previous system.
#    /etc/nixos is left as it was; from now on the tree is the machine's configuration.
#    With --root DIR (a system mounted there, e.g. /mnt from the installer ISO, after
#    nixos-install) it installs the tree's system into DIR as its boot default with
#    `nixos-install --root DIR --flake <tree>#HOST`: osModa runs from DIR's first boot.
#    Files of DIR are read inside DIR: a link such as /etc/hostname -> /etc/static/hostname is
#    followed within DIR, never into the running system.
#
# Options: --yes, --root DIR (operate on a system mounted at DIR; never switches the running
# one), --no-switch (stop after the commits), --osmoda URL (flake of osModa, default
# github:osmoda/osmoda), --host NAME (nixosConfigurations attribute; default: the host name),
# --ttl SECS (default 120).
# Exit: 0 done, 1 refused (nothing changed), 2 usage, 3 rolled back, 4 failed.
set -euo pipefail

root=/ yes=0 switch=1 osmoda_url=github:osmoda/osmoda host="" ttl=120
die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ "$#" -gt 0 ]; do
  case $1 in
    --yes|-y) yes=1 ;;
    --root) [ "$#" -ge 2 ] || usage; root=$2; shift ;;
    --no-switch) switch=0 ;;
    --osmoda) [ "$#" -ge 2 ] || usage; osmoda_url=$2; shift ;;
    --host) [ "$#" -ge 2 ] || usage; host=$2; shift ;;
    --ttl) [ "$#" -ge 2 ] || usage; ttl=$2; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
case $ttl in ''|*[!0-9]*) echo "install.sh: --ttl takes whole seconds, got '$ttl'" >&2; exit 2 ;; esac
[ -d "$root" ] || die "--root $root is not a directory"
root=$(cd "$root" && pwd)
r() { if [ "$root" = / ]; then printf '%s' "$1"; else printf '%s%s' "$root" "$1"; fi; }

# PATH as the system at $root sees it, as a path here: symbolic links are followed inside the
# root (an absolute target starts again at $root, `..` stops there). On NixOS /etc/hostname and
# /etc/os-release are links to /etc/static/..., itself a link into /nix/store: read plainly from
# /mnt they would lead to the running system's files.
in_root() {
  if [ "$root" = / ]; then printf '%s' "$1"; return 0; fi
  local rest=${1#/} out="" comp link n=0
  while [ -n "$rest" ]; do
    comp=${rest%%/*}
    if [ "$comp" = "$rest" ]; then rest=""; else rest=${rest#*/}; fi
    case $comp in ''|.) continue ;; ..) out=${out%/*}; continue ;; esac
    if [ -L "$root$out/$comp" ]; then
      n=$((n + 1))
      [ "$n" -le 40 ] || return 1
      link=$(readlink "$root$out/$comp")
      case $link in /*) out="" ;; esac
      rest=${link#/}${rest:+/$rest}
    else
      out=$out/$comp
    fi
  done
  printf '%s%s' "$root" "${out:-/}"
}
# Sets `at` to in_root PATH; refuses a link that leads nowhere inside the root (the script would
# otherwise guess what the target system says).
resolve() {
  at=$(in_root "$1") || die "$(r "$1"): too many levels of symbolic links inside $root. Nothing was changed."
  if [ ! -e "$at" ] && [ "$at" != "$(r "$1")" ]; then
    die "$(r "$1") is a link that does not resolve inside $root (it leads to ${at#"$root"}, missing there): $2. Nothing was changed."
  fi
}

resolve /etc/nixos "mount the target system completely"
etc_nixos=$at
resolve /etc/os-release "mount the target system completely"
os_release=$at
resolve /etc/NIXOS "mount the target system completely"
nixos_marker=$at
tree=$(r /var/lib/osmoda/config)
gateway_env=$(r /var/lib/osmoda/gateway.env)
gateway_token=$(r /var/lib/osmoda/gateway-token)

# --- refuse what is not an existing NixOS machine, before touching anything -------------------
os_id=$(sed -n 's/^ID=//p' "$os_release" 2>/dev/null | tr -d '"' || true)
if [ ! -e "$nixos_marker" ] && [ "$os_id" != nixos ]; then
  die "$(r /) is not NixOS (no /etc/NIXOS; /etc/os-release says ID=${os_id:-nothing}).
osModa installs onto an existing NixOS machine and never converts another distribution:
install NixOS first (https://nixos.org/download), then run this again. Nothing was changed."
fi
[ -f "$etc_nixos/configuration.nix" ] || [ -f "$etc_nixos/flake.nix" ] ||
  die "$etc_nixos has neither configuration.nix nor flake.nix: nothing to import. Nothing was changed."
[ ! -e "$tree" ] || die "$tree already exists: osModa is installed (or a previous attempt left it; move it away to start over). Nothing was changed."
command -v git >/dev/null || die "git is needed (nix-shell -p git). Nothing was changed."

if [ -z "$host" ]; then
  resolve /etc/hostname "pass --host NAME (the target's networking.hostName)"
  host=$(tr -d ' \n' 2>/dev/null < "$at" || true)
  [ -n "$host" ] || host=nixos
fi
case $host in *[!A-Za-z0-9_-]*|'') die "host name '$host' cannot name a flake output; pass --host NAME" ;; esac
release=$(sed -n 's/^VERSION_ID=//p' "$os_release" 2>/dev/null | tr -d '"' | cut -d. -f1-2 || true)
case $(uname -m) in x86_64) system=x86_64-linux ;; aarch64) system=aarch64-linux ;; *) system="$(uname -m)-linux" ;; esac

# --- build the new tree beside its final place; move it in only when complete -----------------
work=$(mktemp -d "${TMPDIR:-/tmp}/osmoda-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
new=$work/config
mkdir -p "$new"
(cd "$etc_nixos" && tar --exclude=./.git --exclude=./result -cf - .) | (cd "$new" && tar -xf -)
g() { git -C "$new" -c user.name=osmoda-install -c user.email=osmoda-install@localhost -c commit.gpgsign=false "$@"; }
g init -q -b main
g add -A
g commit -q -m "imported from /etc/nixos" -m "The files of $etc_nixos as they were, unchanged."

cat > "$new/osmoda.nix" <<'EOF'
# osModa settings (added by scripts/install.sh). The agent edits this file through agentd (one
# git commit per change); you can edit it too. Keep it data only: literal values, no `let`,
# no `with`, no function calls.
{ ... }:

{
  services.osmoda = {
    enable = true;

    # The agent: the OpenClaw gateway with osModa's tools, skills and templates. Its token is in
    # this file (created by the installer, 0600 root, never in the Nix store); add a model API
    # key there (ANTHROPIC_API_KEY=... or OPENAI_API_KEY=...), then restart osmoda-gateway.
    gateway = {
      enable = true;
      environmentFile = "/var/lib/osmoda/gateway.env";
    };
    # The gateway's token alone (created by the installer from gateway.env, 0600 root): the
    # routines' prompt actions (the morning briefing) and voice send it to the gateway.
    routines.gatewayTokenFile = "/var/lib/osmoda/gateway-token";
    voice.gatewayTokenFile = "/var/lib/osmoda/gateway-token";

    # Restart sshd if it stops; roll back the last generation if that does not help; tell the
    # operator either way.
    watch.watchers.sshd = {
      check = {
        type = "systemd";
        unit = "sshd.service";
      };
      intervalSecs = 30;
      actions = [ "restart" "rollback" "notify" ];
    };
  };
}
EOF

if [ -f "$new/flake.nix" ]; then
  kind=flake
  # Add the input, the outputs argument and the modules, by text, only in the common shape.
  if ! awk -v url="$osmoda_url" '
    BEGIN { inp = 0; outa = 0; mods = 0 }
    { line = $0 }
    !inp && line ~ /^[ \t]*inputs[ \t]*=[ \t]*\{[ \t]*$/ {
      print line
      print "    osmoda.url = \"" url "\";"
      print "    osmoda.inputs.nixpkgs.follows = \"nixpkgs\";"
      inp = 1; next
    }
    !inp && line ~ /^[ \t]*inputs\.[A-Za-z0-9_-]+/ {
      print "  inputs.osmoda.url = \"" url "\";"
      print "  inputs.osmoda.inputs.nixpkgs.follows = \"nixpkgs\";"
      inp = 1
    }
    !outa && line ~ /outputs[ \t]*=[ \t]*([A-Za-z_][A-Za-z0-9_]*@)?\{[ \t]*self/ {
      sub(/\{[ \t]*self/, "{ self, osmoda", line); outa = 1
    }
    line ~ /modules[ \t]*=[ \t]*\[/ {
      mods++
      # Whatever spacing the list had (`[./configuration.nix]` too), its first element stays one.
      sub(/modules[ \t]*=[ \t]*\[[ \t]*/, "modules = [ osmoda.nixosModules.default ./osmoda.nix ", line)
    }
    { print line }
    END { exit !(inp && outa && mods == 1) }
  ' "$new/flake.nix" > "$work/flake.nix"; then
    die "$etc_nixos/flake.nix is not in a shape this script edits safely (it needs an \`inputs\` set or
\`inputs.<name>\` lines, \`outputs = { self, ... }\` and exactly one \`modules = [ ... ]\` list).
Add osModa by hand: inputs.osmoda.url = \"$osmoda_url\"; the outputs argument osmoda; and
osmoda.nixosModules.default plus a module with services.osmoda.enable = true in modules. Nothing was changed."
  fi
  mv "$work/flake.nix" "$new/flake.nix"
  if grep -q "nixosConfigurations\.\"\?$host\"\? *=" "$new/flake.nix" ||
     grep -q "nixosConfigurations *= *{" "$new/flake.nix"; then :; else
    echo "install.sh: note: flake.nix defines no nixosConfigurations.$host; osmoda-watch builds <tree>#$host (pass --host)" >&2
  fi
else
  kind=channel
  nixpkgs_url=github:NixOS/nixpkgs/nixos-unstable
  [ -z "$release" ] || nixpkgs_url="github:NixOS/nixpkgs/nixos-$release"
  cat > "$new/flake.nix" <<EOF
# This machine's configuration as a flake (added by scripts/install.sh; configuration.nix and the
# files it imports are as they were in /etc/nixos). osModa's agentd keeps this directory in git:
# every change becomes one commit (a "generation"), and system.configurationRevision ties the
# running system to it.
{
  description = "$host (osModa; imported from /etc/nixos)";

  inputs = {
    nixpkgs.url = "$nixpkgs_url";
    osmoda = {
      url = "$osmoda_url";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, osmoda, ... }: {
    nixosConfigurations."$host" = nixpkgs.lib.nixosSystem {
      system = "$system";
      modules = [
        osmoda.nixosModules.default
        ./configuration.nix
        ./osmoda.nix
        { system.configurationRevision = self.rev or self.dirtyRev or null; }
      ];
    };
  };
}
EOF
fi

if command -v nix-instantiate >/dev/null; then
  for f in "$new/flake.nix" "$new/osmoda.nix"; do
    nix-instantiate --parse "$f" >/dev/null 2>"$work/parse.err" ||
      die "the $(basename "$f") this script wrote does not parse: $(cat "$work/parse.err"). Nothing was changed."
  done
fi
# Lock the inputs now and commit flake.lock with the change: building an unlocked git flake
# writes flake.lock into the tree uncommitted (agentd then refuses every edit as a hand edit),
# and every later build would take the inputs' newest commits.
command -v nix >/dev/null || die "nix is needed to lock the flake's inputs. Nothing was changed."
lock_args=() pinned="" had_lock=0
[ ! -e "$new/flake.lock" ] || had_lock=1
rev=$(nixos-version --revision 2>/dev/null || true)
if [ "${#rev}" = 40 ] && [ -z "${rev//[0-9a-f]/}" ] && [ "$had_lock" = 0 ]; then
  pinned=$rev
  lock_args=(--override-input nixpkgs "github:NixOS/nixpkgs/$rev")
fi
g add -A
(cd "$new" && nix --extra-experimental-features "nix-command flakes" flake lock "${lock_args[@]}") >"$work/lock.err" 2>&1 ||
  die "could not lock the flake's inputs (nix flake lock; is the network up?):
$(tail -n 5 "$work/lock.err")
Nothing was changed."
[ -f "$new/flake.lock" ] || die "nix flake lock wrote no flake.lock. Nothing was changed."
g add -A
g commit -q -m "osModa: add the osModa flake input and module, enable services.osmoda and its gateway" \
  -m "Added by scripts/install.sh ($kind machine); the imported files are unchanged."

# --- the plan, then the question ------------------------------------------------------------
cat <<EOF
osModa will be installed on $(r /) (a $kind NixOS configuration, host $host):

  create  $tree  (git; from $etc_nixos, $(g ls-files | wc -l) files)
            $(g log --format='%h %s' | tail -1)
            $(g log -1 --format='%h %s')
  leave   $etc_nixos as it is (the tree is the configuration from now on)
  $([ -e "$gateway_env" ] && echo "keep    $gateway_env (exists: the gateway's token and model keys)" || echo "create  $gateway_env (0600: a new gateway token; add a model API key there)")
  $([ -e "$gateway_token" ] && echo "keep    $gateway_token (exists: the gateway's token alone)" || echo "create  $gateway_token (0600: the token of $gateway_env alone, for osmoda-routines and osmoda-voice)")
EOF
g diff --stat HEAD~1 HEAD | sed 's/^/          /'
g diff HEAD~1 HEAD -- flake.nix | sed 's/^/    | /' | head -60
locked=$(nix-instantiate --eval -E "(builtins.fromJSON (builtins.readFile $new/flake.lock)).nodes.nixpkgs.locked.rev or \"?\"" 2>/dev/null | tr -d '"' || true)
if [ -n "$pinned" ]; then
  echo "  lock    flake.lock: nixpkgs at ${pinned:0:12}, the revision this system runs"
elif [ "$had_lock" = 1 ]; then
  echo "  lock    flake.lock: your inputs as they were locked (nixpkgs at ${locked:0:12}), osModa added"
else
  echo "  lock    flake.lock: nixpkgs at ${locked:0:12}, its branch's newest (nixos-version gave no revision to pin)"
fi
if [ "$switch" = 1 ] && [ "$root" = / ]; then
  echo "  apply   nixos-rebuild build --flake $tree#$host, activate (not the boot default), probe"
  echo "          sshd and agentd for up to ${ttl}s, then make it the boot default or roll back"
elif [ "$switch" = 1 ]; then
  echo "  apply   nixos-install --root $root --flake git+file://$tree#$host: the system at $root"
  echo "          boots osModa from its next boot (nothing here is switched)"
else
  echo "  apply   nothing (--no-switch): later, on that machine, run"
  echo "          nixos-rebuild switch --flake /var/lib/osmoda/config#$host"
fi
if [ "$yes" != 1 ]; then
  printf 'Proceed? [y/N] '
  read -r answer || answer=""
  case $answer in y|Y|yes|YES) ;; *) echo "install.sh: not installed (answer was '${answer}'). Nothing was changed." >&2; exit 1 ;; esac
fi

mkdir -p "$(dirname "$tree")"
chmod 0700 "$new"
mv "$new" "$tree"
echo "created $tree"
# The gateway's token (a random 256-bit value), only when the file is missing: an existing file
# holds the operator's keys and is never touched.
if [ ! -e "$gateway_env" ]; then
  (
    umask 077
    tmp=$(mktemp "$gateway_env.XXXXXX")
    printf 'OPENCLAW_GATEWAY_TOKEN=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$tmp"
    mv -n "$tmp" "$gateway_env"
    rm -f "$tmp"
  )
  echo "created $gateway_env (add a model API key there)"
fi
# The token alone, for the daemons that need only it (as modules/hosts/gateway-token.nix does on
# the flake's hosts), only when missing and when gateway.env has a token line.
token=$(sed -n 's/^OPENCLAW_GATEWAY_TOKEN=//p' "$gateway_env" | head -n 1)
if [ ! -e "$gateway_token" ] && [ -n "$token" ]; then
  (
    umask 077
    tmp=$(mktemp "$gateway_token.XXXXXX")
    printf '%s\n' "$token" > "$tmp"
    mv -n "$tmp" "$gateway_token"
    rm -f "$tmp"
  )
  echo "created $gateway_token (the gateway's token alone)"
elif [ ! -e "$gateway_token" ]; then
  echo "install.sh: $gateway_env has no OPENCLAW_GATEWAY_TOKEN line, so $gateway_token was not made: put the gateway's token alone in it (0600) for the routines' prompts and voice" >&2
fi
[ "$switch" = 1 ] || exit 0

# --- a mounted system: install the tree's system as its boot default --------------------------
if [ "$root" != / ]; then
  after="boot $root's system and run there: nixos-rebuild switch --flake /var/lib/osmoda/config#$host"
  command -v nixos-install >/dev/null || { echo "install.sh: nixos-install not found; the tree is ready, nothing installed: $after" >&2; exit 4; }
  nixos-install --root "$root" --flake "git+file://$tree#$host" --no-root-passwd --no-channel-copy ||
    { echo "install.sh: nixos-install failed (above); $root boots what it booted before; the tree stays at $tree: fix it, or $after" >&2; exit 4; }
  echo "osModa is installed in $root: its system is the boot default from $tree ($(git -C "$tree" log -1 --format=%h)). Reboot; then: agentctl health"
  exit 0
fi

# --- apply like SafeSwitch ----------------------------------------------------------------------
command -v nixos-rebuild >/dev/null || { echo "install.sh: nixos-rebuild not found; the tree is ready, nothing applied" >&2; exit 4; }
prev=$(readlink -f /run/current-system)
sshd_before=0
systemctl is-active --quiet sshd.service && sshd_before=1
(cd "$work" && nixos-rebuild build --flake "git+file://$tree#$host") || { echo "install.sh: the build failed; nothing was activated (the tree is at $tree)" >&2; exit 4; }
built=$(readlink -f "$work/result")
[ -x "$built/sw/bin/agentctl" ] || { echo "install.sh: the built system has no agentctl ($built/sw/bin/agentctl), so agentd cannot be probed; nothing was activated (the tree is at $tree)" >&2; exit 4; }
"$built/bin/switch-to-configuration" test || true
deadline=$((SECONDS + ttl)) healthy=0
while [ "$SECONDS" -lt "$deadline" ]; do
  ok=1
  if [ "$sshd_before" = 1 ] && ! systemctl is-active --quiet sshd.service; then ok=0; fi
  if ! "$built/sw/bin/agentctl" health >/dev/null 2>&1; then ok=0; fi
  if [ "$ok" = 1 ]; then healthy=1; break; fi
  sleep 2
done
if [ "$healthy" = 1 ]; then
  nix-env -p /nix/var/nix/profiles/system --set "$built"
  "$built/bin/switch-to-configuration" boot
  echo "osModa is running; $built is the boot default. Talk to the agent, or run: agentctl health"
  exit 0
fi
echo "install.sh: health checks failed within ${ttl}s (sshd: $sshd_before→$(systemctl is-active sshd.service || true), agentd: no answer); rolling back to $prev" >&2
"$prev/bin/switch-to-configuration" test || true
echo "install.sh: rolled back; the tree stays at $tree for you to fix (osmoda not enabled on this boot)" >&2
exit 3
