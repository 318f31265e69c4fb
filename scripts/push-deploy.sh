#!/usr/bin/env bash
# Deploy a configuration to a remote osModa (NixOS) host over SSH, through its own SafeSwitch:
#
#   scripts/push-deploy.sh [options] [USER@]HOST
#
# The configuration is a commit of the host's tree (a clone of its /var/lib/osmoda/config:
# `git clone root@HOST:/var/lib/osmoda/config`, edit, commit). In order, stopping at the first
# failure (a refusal changes nothing on the host):
# 1. Checks here: the tree is a git repository with a clean work tree and a flake.nix.
# 2. Checks there: NixOS (/etc/NIXOS), osModa (agentctl answers), the tree is a git repository.
# 3. Builds: --build-on local (default) builds the host's system here (`nix build`) and copies
#    its closure there (`nix copy --to ssh://HOST`), so the host fetches nothing it was given;
#    --build-on target builds nothing here: the host's SafeSwitch builds it.
# 4. Records it there as a generation: pushes the commit to refs/osmoda/incoming/<rev> of the
#    host's tree and asks the host's agentd for a generation with that tree
#    (`agentctl config restore`): a commit on the host's branch, in its ledger, judged by its
#    approval gate. A destructive change is refused with a ticket: a person approves it there
#    (`agentctl approvals approve <id>`), then run this again with --approval <id>.
# 5. Applies that generation there with SafeSwitch (`agentctl switch begin --generation G`, then
#    `agentctl switch status ID --wait --timeout SECS`): activate, probe the host's default checks
#    (sshd, agentd) and each --check until the TTL, then make it the boot default — or roll back
#    to the recorded previous system by itself. The generation is the one step 4 recorded (or,
#    when the host's tree already held this configuration, its HEAD with the same tree), so a
#    commit landing there in between is not what gets applied.
#
# Options: --flake DIR (the tree; default .), --host NAME (nixosConfigurations attribute; default
# HOST up to its first dot), --build-on local|target, --ttl SECS, --timeout SECS (how long to
# follow the switch; default 3600: a build on the target counts), --check JSON (a health check,
# repeatable), --reason TEXT, --approval ID, --tree PATH (the host's tree; default
# /var/lib/osmoda/config), --ssh-option OPT (passed to ssh as -o OPT, repeatable; also to nix
# copy and git), --identity FILE (ssh -i), --port N (ssh -p), --yes (do not ask), --dry-run
# (print what would run; run nothing that changes either machine). With --build-on local, nix
# copy gets the ssh options through NIX_SSHOPTS, which Nix splits at whitespace itself: an
# option, identity file or port with whitespace, a quote or a backslash is refused there (put it
# in ~/.ssh/config, or use --build-on target).
# Exit: 0 committed, 1 refused or failed before the switch started (nothing applied), 2 usage,
# 3 rolled back, 4 the switch failed, 5 the switch had not finished within --timeout (it goes on
# there), 6 the switch was started (or may have been) but how it ended is not known here (ssh or
# the wait broke off): follow it on the host with `agentctl switch status ID` (or `switch history`).
set -euo pipefail

flake=. host="" build_on=local ttl="" timeout=3600 reason="" approval="" tree=/var/lib/osmoda/config yes=0 dry=0
target="" port="" identity=""
checks=() sshopts=()
die() { echo "push-deploy.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
need() { [ "$2" -ge 2 ] || { echo "push-deploy.sh: $1 needs a value" >&2; exit 2; }; }
while [ "$#" -gt 0 ]; do
  case $1 in
    --flake) need "$1" "$#"; flake=$2; shift ;;
    --host) need "$1" "$#"; host=$2; shift ;;
    --build-on) need "$1" "$#"; build_on=$2; shift ;;
    --ttl) need "$1" "$#"; ttl=$2; shift ;;
    --timeout) need "$1" "$#"; timeout=$2; shift ;;
    --check) need "$1" "$#"; checks+=("$2"); shift ;;
    --reason|-m) need "$1" "$#"; reason=$2; shift ;;
    --approval) need "$1" "$#"; approval=$2; shift ;;
    --tree) need "$1" "$#"; tree=$2; shift ;;
    --ssh-option|-o) need "$1" "$#"; sshopts+=(-o "$2"); shift ;;
    --identity|-i) need "$1" "$#"; identity=$2; shift ;;
    --port|-p) need "$1" "$#"; port=$2; shift ;;
    --yes|-y) yes=1 ;;
    --dry-run|-n) dry=1 ;;
    -h|--help) usage ;;
    -*) echo "push-deploy.sh: unknown option '$1'" >&2; usage ;;
    *) [ -z "$target" ] || { echo "push-deploy.sh: one host only (got '$target' and '$1')" >&2; exit 2; }; target=$1 ;;
  esac
  shift
done
[ -n "$target" ] || { echo "push-deploy.sh: which host? give [USER@]HOST" >&2; usage; }
case $build_on in local|target) ;; *) echo "push-deploy.sh: --build-on is local or target, not '$build_on'" >&2; exit 2 ;; esac
case $ttl in *[!0-9]*) echo "push-deploy.sh: --ttl takes whole seconds, got '$ttl'" >&2; exit 2 ;; esac
case $timeout in ''|*[!0-9]*) echo "push-deploy.sh: --timeout takes whole seconds, got '$timeout'" >&2; exit 2 ;; esac
case $port in *[!0-9]*) echo "push-deploy.sh: --port takes a number, got '$port'" >&2; exit 2 ;; esac
case $target in -*|*[!A-Za-z0-9@._:-]*) echo "push-deploy.sh: '$target' is not a [USER@]HOST" >&2; exit 2 ;; esac
case $tree in /*) ;; *) echo "push-deploy.sh: --tree must be an absolute path on the host" >&2; exit 2 ;; esac
if [ -z "$host" ]; then host=${target#*@}; host=${host%%.*}; fi
case $host in *[!A-Za-z0-9_-]*|'') echo "push-deploy.sh: '$host' cannot name a flake output; pass --host NAME" >&2; exit 2 ;; esac
for c in "${checks[@]}"; do
  case $c in '{'*'}') ;; *) echo "push-deploy.sh: --check takes one health check as JSON, e.g. '{\"type\":\"agentd\"}', got '$c'" >&2; exit 2 ;; esac
done

[ -n "$identity" ] && sshopts+=(-i "$identity")
[ -n "$port" ] && sshopts+=(-p "$port")
if [ "$build_on" = local ]; then
  # NIX_SSHOPTS is split by Nix (at whitespace in older versions, shell-like in newer ones): only
  # words without whitespace, quotes or backslashes mean the same to both.
  for o in "${sshopts[@]}"; do
    case $o in *[[:space:]\'\"\\]*|'')
      echo "push-deploy.sh: with --build-on local, nix copy gets the ssh options through NIX_SSHOPTS, which cannot carry '$o' (whitespace, a quote or a backslash): put it in ~/.ssh/config (Host $target), or use --build-on target" >&2
      exit 2 ;;
    esac
  done
fi
# Quoted for a shell: what ssh and git run locally, and what the host's shell runs.
q() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; printf '%s' "${out% }"; }
sshcmd=$(q ssh "${sshopts[@]}")
show() { echo "+ $*" >&2; }
# Runs a command on the host (its words quoted for the host's shell).
on_host() { ssh "${sshopts[@]}" "$target" -- "$(q "$@")"; }

# --- 1. here --------------------------------------------------------------------------------------
[ -d "$flake" ] || die "--flake $flake is not a directory"
flake=$(cd "$flake" && pwd)
git -C "$flake" rev-parse --git-dir >/dev/null 2>&1 || die "$flake is not a git repository: clone the host's tree (git clone $target:$tree) and commit your change there"
[ -f "$flake/flake.nix" ] || die "$flake has no flake.nix: osModa trees are flakes (scripts/install.sh makes one)"
[ -z "$(git -C "$flake" status --porcelain)" ] || die "$flake has uncommitted changes: commit them (the commit is what gets deployed). Nothing was done."
rev=$(git -C "$flake" rev-parse HEAD)
subject=$(git -C "$flake" log -1 --format=%s)
[ -n "$reason" ] || reason="$subject"
from=$(hostname 2>/dev/null || echo here)
ref="refs/osmoda/incoming/$rev"
attr="$flake#nixosConfigurations.$host.config.system.build.toplevel"
switch_args=(switch begin --reason "push-deploy of ${rev:0:12} from $from: $reason")
[ -n "$ttl" ] && switch_args+=(--ttl "$ttl")
for c in "${checks[@]}"; do switch_args+=(--check "$c"); done
# The reason is the subject; the body says where the commit came from.
restore_args=(config restore "$rev" --reason "$reason"$'\n\n'"Deployed with scripts/push-deploy.sh from $from (commit $rev of $flake).")
[ -n "$approval" ] && restore_args+=(--approval "$approval")

cat >&2 <<EOF
push-deploy to $target (nixosConfigurations.$host):
  commit   ${rev:0:12} "$subject" of $flake
  build    $([ "$build_on" = local ] && echo "here (nix build), closure copied to the host" || echo "on the host, by its SafeSwitch")
  record   as a generation of $tree there (agentctl config restore; its approval gate judges it)
  apply    that generation with SafeSwitch there (agentctl switch begin --generation${ttl:+ --ttl $ttl}; its default checks${checks[*]:+ + ${#checks[@]} more}), rolls back by itself; followed for up to ${timeout}s
EOF
if [ "$dry" = 1 ]; then
  show "ssh $target -- (checks: /etc/NIXOS, agentctl health, $tree/.git)"
  [ "$build_on" = local ] && { show "nix build --no-link --print-out-paths $(q "$attr")"; show "nix copy --to ssh://$target <that path>"; }
  show "GIT_SSH_COMMAND=$(q "$sshcmd") git -C $(q "$flake") push $(q "ssh://$target$tree") $(q "$rev:$ref")"
  show "ssh $target -- agentctl $(q "${restore_args[@]}")"
  show "ssh $target -- agentctl $(q "${switch_args[@]}") --generation <the generation recorded>"
  show "ssh $target -- agentctl switch status <its id> --wait --timeout $timeout"
  exit 0
fi
if [ "$yes" != 1 ]; then
  printf 'Proceed? [y/N] ' >&2
  read -r answer || answer=""
  case $answer in y|Y|yes|YES) ;; *) die "not deployed (answer was '$answer'). Nothing was changed." ;; esac
fi

# --- 2. there --------------------------------------------------------------------------------------
# One round trip; the answer names the first thing missing.
probe=$(ssh "${sshopts[@]}" "$target" -- "$(q sh -c '
  if [ ! -e /etc/NIXOS ]; then echo not-nixos
  elif ! command -v agentctl >/dev/null 2>&1; then echo no-agentctl
  elif ! agentctl health >/dev/null 2>&1; then echo no-agentd
  elif ! command -v git >/dev/null 2>&1; then echo no-git
  elif [ ! -d "$1/.git" ]; then echo no-tree
  else echo ok; fi' probe "$tree")") || die "cannot reach $target over ssh (exit $?). Nothing was changed."
case $probe in
  ok) ;;
  not-nixos) die "$target is not NixOS (no /etc/NIXOS): push-deploy only deploys to osModa on NixOS. Nothing was changed." ;;
  no-agentctl|no-agentd) die "$target runs no osModa ($probe): install it there first (scripts/install.sh on the host). Nothing was changed." ;;
  no-git) die "$target has no git on the PATH of this login: add pkgs.git to its environment.systemPackages. Nothing was changed." ;;
  no-tree) die "$target has no git tree at $tree (pass --tree where services.osmoda.configTree points). Nothing was changed." ;;
  *) die "unexpected answer from $target: $probe. Nothing was changed." ;;
esac

# --- 3. build ----------------------------------------------------------------------------------------
if [ "$build_on" = local ]; then
  command -v nix >/dev/null || die "nix is not installed here: use --build-on target. Nothing was changed."
  show "nix build $attr"
  out=$(nix build --no-link --print-out-paths "$attr") || die "the build failed here; nothing was sent to $target."
  show "nix copy --to ssh://$target $out"
  NIX_SSHOPTS="${NIX_SSHOPTS:+$NIX_SSHOPTS }${sshopts[*]}" nix copy --to "ssh://$target" "$out" ||
    die "copying $out to $target failed; nothing was recorded or applied there."
fi

# --- 4. record -------------------------------------------------------------------------------------
show "git push ssh://$target$tree $rev:$ref"
GIT_SSH_COMMAND="$sshcmd" git -C "$flake" push -q "ssh://$target$tree" "+$rev:$ref" ||
  die "pushing ${rev:0:12} to $target:$tree failed; nothing was recorded or applied there."
show "agentctl config restore ${rev:0:12} (on $target)"
set +e
recorded=$(on_host agentctl "${restore_args[@]}" 2>&1)
rc=$?
set -e
printf '%s\n' "$recorded" >&2
# The generation to apply: the one agentd just recorded ("generation <12 hex>  <reason>").
generation=""
if [ "$rc" = 0 ]; then
  generation=$(printf '%s\n' "$recorded" | sed -n 's/^generation \([0-9a-f]\{12,40\}\) .*/\1/p' | head -n 1)
  [ -n "$generation" ] || die "$target's agentd recorded ${rev:0:12} but its answer (above) names no generation; nothing was applied: look with agentctl config log there."
else
  case $recorded in
    *"nothing changed"*)
      # The host's HEAD already has this tree: apply that commit (the branch's), if it still does.
      heads=$(on_host git -C "$tree" rev-parse HEAD "HEAD^{tree}") || die "cannot read $target's $tree (exit $?). Nothing was applied."
      want=$(git -C "$flake" rev-parse "$rev^{tree}")
      [ "$(printf '%s\n' "$heads" | sed -n 2p)" = "$want" ] ||
        die "$target's tree moved on while deploying (its HEAD no longer has ${rev:0:12}'s tree): run this again. Nothing was applied."
      generation=$(printf '%s\n' "$heads" | sed -n 1p)
      echo "push-deploy.sh: $target's tree already has this configuration (generation ${generation:0:12}); applying it." >&2 ;;
    *approval*|*ticket*) die "$target's approval gate needs a person for this change: approve it there (the command is above), then run this again with --approval <ticket>. Nothing was applied." ;;
    *) die "$target's agentd refused to record ${rev:0:12} (above). Nothing was applied." ;;
  esac
fi

# --- 5. apply --------------------------------------------------------------------------------------
show "agentctl switch begin --generation ${generation:0:12} (on $target)"
set +e
began=$(on_host agentctl "${switch_args[@]}" --generation "$generation" 2>&1)
rc=$?
set -e
printf '%s\n' "$began" >&2
id=$(printf '%s\n' "$began" | sed -n 's/^switch \([0-9][0-9]*\) accepted; follow it with.*/\1/p' | head -n 1)
if [ "$rc" = 255 ] || { [ "$rc" = 0 ] && [ -z "$id" ]; }; then
  echo "push-deploy.sh: the switch of ${generation:0:12} on $target may have started, but how is not known here (ssh exit $rc): follow it there with agentctl switch history." >&2
  exit 6
fi
[ "$rc" = 0 ] || die "$target's osmoda-watch refused the switch (above): ${rev:0:12} is recorded there as generation ${generation:0:12}, not applied."
show "agentctl switch status $id --wait --timeout $timeout (on $target)"
set +e
on_host agentctl switch status "$id" --wait --timeout "$timeout"
rc=$?
set -e
case $rc in
  0) echo "push-deploy.sh: ${rev:0:12} is live on $target as generation ${generation:0:12} (SafeSwitch $id committed)." >&2 ;;
  3) echo "push-deploy.sh: a health check failed on $target: switch $id rolled back to its previous system by itself; the generation stays in its history." >&2 ;;
  4) echo "push-deploy.sh: switch $id failed on $target (nothing activated, or its rollback failed: see above)." >&2 ;;
  5) echo "push-deploy.sh: switch $id on $target had not finished within ${timeout}s; it goes on there: follow it with agentctl switch status $id." >&2 ;;
  *) echo "push-deploy.sh: switch $id was started on $target, but following it ended with $rc (ssh or osmoda-watch broke off): it may still commit or roll back there; follow it with agentctl switch status $id." >&2; rc=6 ;;
esac
exit "$rc"
