# osmoda-keyd and osmoda-routines for scripts/dev (sourced; uses its $root, $run, $state, $etc,
# $pids, wait_ready and say/die from setup.sh). Both read what SafeSwitch renders from the tree
# with lib/ (etc/osmoda/keyd.json, routines.json), as they read /etc/osmoda on NixOS, and re-read
# it after each switch.

export OSMODA_KEYD_SOCKET="$run/keyd.sock"
export OSMODA_ROUTINES_SOCKET="$run/routines.sock"

# unix_get SOCKET PATH: GET PATH on a daemon's Unix socket; the body on stdout, fails on >= 400.
unix_get() {
  curl -sS --fail-with-body --max-time 30 --unix-socket "$1" "http://osmoda$2"
}

# render_etc: a fresh tree has never been applied, so etc/osmoda has no keyd.json or
# routines.json yet: apply it once. The starter tree's sshd watcher goes first (this dev machine
# has no systemd: the watcher would restart sshd, then roll the generation back).
render_etc() {
  if agentctl config get services.osmoda.watch.watchers.sshd >/dev/null 2>&1; then
    say "dropping the starter tree's sshd watcher: no systemd on this dev machine (a generation)"
    agentctl config unset services.osmoda.watch.watchers.sshd --reason "no systemd on this dev machine" >/dev/null ||
      die "agentctl config unset services.osmoda.watch.watchers.sshd failed (see $root/agentd.log)"
  fi
  if [ ! -f "$etc/osmoda/keyd.json" ] || [ ! -f "$etc/osmoda/routines.json" ]; then
    say "applying the tree once with SafeSwitch: lib/ renders $etc/osmoda/*.json for osmoda-keyd and osmoda-routines"
    agentctl switch begin --wait --ttl 1 --reason "first apply on this dev machine: render etc/osmoda" >/dev/null ||
      die "the first SafeSwitch did not commit (agentctl switch history; $root/watch.log)"
  fi
}

# start_services: osmoda-keyd and osmoda-routines, each when the tree enables it (lib/ renders its
# file only then). Everything here runs as one user, so that user is also keyd's for agentd.
start_services() {
  render_etc
  if [ -f "$etc/osmoda/keyd.json" ]; then
    osmoda-keyd --socket "$OSMODA_KEYD_SOCKET" --config "$etc/osmoda/keyd.json" \
      --state-dir "$state/keyd" --agentd-socket "$OSMODA_AGENTD_SOCKET" >>"$root/keyd.log" 2>&1 &
    pids+=($!)
    wait_ready osmoda-keyd "$!" "$root/keyd.log" unix_get "$OSMODA_KEYD_SOCKET" /health
  else
    say "osmoda-keyd is disabled in the tree (services.osmoda.keyd.enable); not started"
  fi
  if [ -f "$etc/osmoda/routines.json" ]; then
    # Commands of routines must not see the approval path, agentd's and keyd's state: the
    # module's masks name /run and /var/lib paths, this machine's live under .osmoda.
    local token=
    [ ! -s "$root/gateway/token" ] || token=$(cat "$root/gateway/token")
    OPENCLAW_GATEWAY_TOKEN=$token osmoda-routines --socket "$OSMODA_ROUTINES_SOCKET" \
      --config "$etc/osmoda/routines.json" --state-dir "$state/routines" \
      --agentd-socket "$OSMODA_AGENTD_SOCKET" --watch-socket "$OSMODA_WATCH_SOCKET" \
      --mask "$root/relay" --mask "$OSMODA_APPROVAL_SOCKET" --mask "$state/agentd" --mask "$state/keyd" \
      >>"$root/routines.log" 2>&1 &
    pids+=($!)
    wait_ready osmoda-routines "$!" "$root/routines.log" unix_get "$OSMODA_ROUTINES_SOCKET" /health
  else
    say "osmoda-routines is disabled in the tree (services.osmoda.routines.enable); not started"
  fi
}

# api WANT SOCKET METHOD PATH [BODY]: prints the curl line for a daemon's API (pasteable as
# printed), runs it, shows the answer (kept in $answer) and counts a failed step unless curl
# exits with WANT (22: the daemon refused).
answer=
api() {
  local want=$1 socket=$2 method=$3 path=$4 body=${5:-} rc=0
  local args=(curl -sS --fail-with-body --unix-socket "$socket")
  [ "$method" = GET ] || args+=(-X "$method")
  [ -z "$body" ] || args+=(-H 'Content-Type: application/json' -d "$body")
  args+=("http://osmoda$path")
  show_cmd "${args[@]}"
  answer=$("${args[@]}") || rc=$?
  printf '%s\n' "$answer"
  if [ "$rc" != "$want" ]; then
    echo "!! expected exit $want, got $rc" >&2
    failed_steps=$((failed_steps + 1))
  fi
}

# until_true SECONDS CMD...: until CMD succeeds (quietly), at most SECONDS.
until_true() {
  local n=$(($1 * 10))
  shift
  while [ "$n" -gt 0 ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    n=$((n - 1))
    sleep 0.1
  done
  return 1
}

# demo_routine: a routine declared through osmoda-routines' API (a commit in the tree, applied by
# SafeSwitch), then run by hand; the run is in its history and its events in the ledger.
demo_routine() {
  local r=$OSMODA_ROUTINES_SOCKET name=agentd-health run
  step "7. A routine: /routine/add declares services.osmoda.routines.$name (a commit) and applies it with SafeSwitch"
  if unix_get "$r" /routine/list | grep -qF "\"name\":\"$name\""; then
    echo "already there (from an earlier run); nothing to do"
  else
    api 0 "$r" POST /routine/add "{\"name\":\"$name\",\"trigger\":{\"type\":\"interval\",\"seconds\":3600},\"action\":{\"type\":\"http\",\"method\":\"GET\",\"path\":\"/health\"},\"ttl_secs\":3,\"reason\":\"record agentd's health every hour\"}"
    # The answer holds the switch that applies it (its only "id"); it commits after the TTL.
    run_expect 0 agentctl switch status "$(printf '%s' "$answer" | grep -o '"id":[0-9]*' | cut -d: -f2)" --wait
  fi
  show git -C "$tree" log --format='%h %an: %s' -2
  step "8. Run it now (it calls agentd's /health); the run is in the history, routine.run.* in the ledger"
  api 0 "$r" POST "/routine/trigger/$name"
  run=$(printf '%s' "$answer" | sed -n 's/.*"run_id":\([0-9]*\).*/\1/p')
  until_true 60 sh -c "curl -sSf --unix-socket '$r' 'http://osmoda/routine/history?routine=$name&limit=1' | grep -q '\"id\":$run,.*\"status\":\"\\(ok\\|failed\\|interrupted\\)\"'" ||
    { echo "!! run $run of $name did not finish within 60 s" >&2; failed_steps=$((failed_steps + 1)); }
  api 0 "$r" GET "/routine/history?routine=$name&limit=1"
  case "$answer" in
    *"\"id\":$run,"*'"status":"ok"'*) ;;
    *) echo "!! run $run of $name did not end ok" >&2; failed_steps=$((failed_steps + 1)) ;;
  esac
}

# demo_wallet: a Solana wallet in osmoda-keyd; signing is denied until the tree's policy allows
# the chain (a commit a person approves, applied by SafeSwitch), then an off-chain message is
# signed and the signature is a receipt in agentd's ledger.
demo_wallet() {
  local k=$OSMODA_KEYD_SOCKET id sign
  step "9. A wallet: osmoda-keyd makes a Solana key, sealed at rest, and lists it (never the key)"
  if unix_get "$k" /wallet/list | grep -qF '"label":"dev-wallet"'; then
    echo "already there (from an earlier run); nothing to do"
  else
    api 0 "$k" POST /wallet/create '{"chain":"solana","label":"dev-wallet"}'
  fi
  api 0 "$k" GET /wallet/list
  id=$(printf '%s' "$answer" | grep -o '"id":"w_[0-9a-f]*","label":"dev-wallet"' | sed 's/"id":"\([^"]*\)".*/\1/')
  sign="{\"wallet_id\":\"$id\",\"payload\":{\"type\":\"offchain_message\",\"message\":\"hello from scripts/dev\"}}"
  step "10. keyd signs only what the tree's policy allows (default deny): allow Solana, apply, sign"
  if unix_get "$k" /health | grep -qF '"solana"'; then
    echo "the policy allows Solana already (from an earlier run)"
  else
    api 22 "$k" POST /wallet/sign "$sign"
    # Allowing a chain loosens the signing policy, so agentd's gate asks a person (policy.weaken):
    # the edit answers with a ticket, a person approves it on the approval socket (here that is
    # you, so the walk does it), and the same edit with the ticket lands.
    local policy='{"perTxMax":"1000000000","dailyLimit":"5000000000"}' out ticket
    show_cmd agentctl config set services.osmoda.keyd.policy.chains.solana "$policy" --reason "let the dev wallet sign on Solana"
    out=$(agentctl config set services.osmoda.keyd.policy.chains.solana "$policy" --reason "let the dev wallet sign on Solana" 2>&1) || true
    printf '%s\n' "$out"
    ticket=$(printf '%s\n' "$out" | sed -n 's/^  ticket: \([0-9a-f]*\)$/\1/p')
    if [ -z "$ticket" ]; then
      echo "!! expected the gate's ticket for allowing Solana" >&2
      failed_steps=$((failed_steps + 1))
    else
      show agentctl --approval-socket "$OSMODA_APPROVAL_SOCKET" approvals approve "$ticket"
      show agentctl config set services.osmoda.keyd.policy.chains.solana "$policy" --reason "let the dev wallet sign on Solana" --approval "$ticket"
    fi
    run_expect 0 agentctl switch begin --wait --ttl 1 --reason "apply the Solana wallet policy"
  fi
  api 0 "$k" POST /wallet/sign "$sign"
  until_true 30 sh -c "curl -sSf --unix-socket '$OSMODA_AGENTD_SOCKET' 'http://osmoda/receipts?type=wallet.sign&limit=1000' | grep -qF '$id'" ||
    { echo "!! no receipt.wallet.sign for $id in the ledger within 30 s" >&2; failed_steps=$((failed_steps + 1)); }
  show agentctl events --type 'receipt.wallet.*' --limit 6
}
