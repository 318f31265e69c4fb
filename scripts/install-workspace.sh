#!/usr/bin/env bash
# Install osModa's skills and agent templates into an OpenClaw agent workspace.
# Usage: scripts/install-workspace.sh SKILLS_DIR TEMPLATES_DIR WORKSPACE
#
# The NixOS module runs it before the gateway starts (from the Nix store copies of skills/ and
# templates/); tests run the same script. Rules:
# - each skill osModa ships replaces WORKSPACE/skills/<name> (osModa owns those names: a new
#   system brings their new version); skills of other names are left alone;
# - AGENTS.md, TOOLS.md and HEARTBEAT.md are osModa's and always replaced;
# - SOUL.md, IDENTITY.md and USER.md are the person's and the agent's once written: copied only
#   when absent, never overwritten.
# Files are written with the caller's umask, writable by their owner (store copies are 0444).
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 SKILLS_DIR TEMPLATES_DIR WORKSPACE" >&2
  exit 2
fi
skills=$1 templates=$2 workspace=$3
for d in "$skills" "$templates"; do
  [ -d "$d" ] || { echo "$0: $d is not a directory" >&2; exit 2; }
done
case $workspace in /*) ;; *) echo "$0: WORKSPACE must be an absolute path, got '$workspace'" >&2; exit 2 ;; esac

mkdir -p "$workspace/skills"
for src in "$skills"/*/; do
  name=$(basename "$src")
  [ -f "$src/SKILL.md" ] || continue
  # Copy beside, then swap, so the gateway never reads a half-copied skill.
  tmp=$(mktemp -d "$workspace/skills/.$name.XXXXXX")
  cp -R --no-preserve=mode,ownership "$src/." "$tmp/"
  chmod -R u+rwX "$tmp"
  rm -rf "$workspace/skills/$name"
  mv "$tmp" "$workspace/skills/$name"
done

install_file() { # install_file NAME: replace WORKSPACE/NAME through a temporary file
  local tmp
  tmp=$(mktemp "$workspace/.$1.XXXXXX")
  cp --no-preserve=mode,ownership "$templates/$1" "$tmp"
  chmod u+rw "$tmp"
  mv -f "$tmp" "$workspace/$1"
}
for f in AGENTS.md TOOLS.md HEARTBEAT.md; do install_file "$f"; done
for f in SOUL.md IDENTITY.md USER.md; do
  [ -e "$workspace/$f" ] || install_file "$f"
done
