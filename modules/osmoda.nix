# osModa: agentd and its sibling daemons as NixOS services, configured entirely through
# `services.osmoda.*`. Each daemon reads only /etc/osmoda/<daemon>.json, rendered by
# ../lib (the same code agentd's local backend uses) and checked at build time with the
# daemon's own `check-config`.
{ config, options, lib, pkgs, ... }:

let
  cfg = config.services.osmoda;
  osmodaLib = import ../lib;
  d = osmodaLib.defaults;

  inherit (lib)
    literalExpression mkDefault mkEnableOption mkIf mkMerge mkOption mkPackageOption types;

  jsonFormat = pkgs.formats.json { };

  nullOr = t: description: mkOption { type = types.nullOr t; default = null; inherit description; };
  # A PipeWire node name as `pw-record --target` and WirePlumber take it (the rules of
  # osmoda-voice's `device::check_source`, which checks `--source` again at start): not empty,
  # at most 256 bytes, no white space at either end, no control character, not a number (pw-record
  # reads `0` as "link to nothing", WirePlumber any other number as an object serial).
  pipewireNodeName = types.addCheck types.str (s:
    s != "" && builtins.stringLength s <= 256
    && builtins.match "[[:space:]].*|.*[[:space:]]" s == null
    && builtins.match ".*[[:cntrl:]].*" s == null
    && builtins.match "[-+]?(0[xX][0-9a-fA-F]+|([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?)" s == null)
    // { description = "PipeWire node name (node.name: not empty, at most 256 bytes, no white space at either end, no control character, not a number)"; };

  # The tagged health check shared by watchers and SafeSwitch. Fields that do not belong
  # to the chosen `type` must stay null: the daemon's check-config rejects them.
  checkModule = {
    options = {
      type = mkOption {
        type = types.enum [ "systemd" "http" "tcp" "command" "disk" "process" "agentd" ];
        description = "Kind of probe; selects which of the other fields apply.";
      };
      unit = nullOr types.str "systemd: unit that must be active, e.g. `nginx.service`.";
      url = nullOr types.str "http: URL to GET.";
      expectStatus = nullOr (types.ints.between 100 599)
        "http: expected status (null = ${toString d.httpCheck.expectStatus}).";
      bodyContains = nullOr types.str "http: substring the response body must contain.";
      followRedirects = nullOr types.bool "http: follow up to 5 redirects (null = no: a 3xx is the answer judged).";
      host = nullOr types.str "tcp: host to connect to.";
      port = nullOr types.port "tcp: port to connect to.";
      command = nullOr (types.listOf types.str) "command: argv (no shell) that must exit 0; it runs in the command sandbox (no approval socket, no daemon secrets).";
      user = nullOr types.str "command: user to run as (null = ${d.commandCheck.user}); `root` only for a command that needs root.";
      path = nullOr types.str "disk: a path on the filesystem to measure.";
      minFreePercent = nullOr (types.ints.between 0 100) "disk: minimum free space in percent.";
      name = nullOr types.str "process: process name (comm) that must be running.";
      timeoutSecs = nullOr types.ints.positive
        "Probe time budget in seconds (null = ${toString d.check.timeoutSecs}).";
      retries = nullOr types.ints.unsigned
        "Extra attempts before the check fails (null = ${toString d.check.retries}).";
    };
  };

  watcherModule = {
    options = {
      check = mkOption {
        type = types.submodule checkModule;
        description = "The probe.";
        example = literalExpression ''{ type = "systemd"; unit = "nginx.service"; }'';
      };
      intervalSecs = mkOption {
        type = types.ints.positive;
        default = d.watcher.intervalSecs;
        description = "Seconds between probes.";
      };
      actions = mkOption {
        type = types.listOf (types.enum [ "restart" "rollback" "notify" ]);
        default = d.watcher.actions;
        description = "Escalation ladder, one step per consecutive failure.";
      };
    };
  };

  triggerModule = {
    options = {
      type = mkOption {
        type = types.enum [ "cron" "interval" "event" "webhook" ];
        description = "What starts the routine.";
      };
      schedule = nullOr types.str "cron: croner expression, 5 fields or 6 with seconds first, e.g. `0 8 * * MON-FRI`.";
      timezone = nullOr types.str "cron: IANA time zone the schedule is read in (null = ${d.cronTrigger.timezone}).";
      seconds = nullOr types.ints.positive "interval: seconds between runs.";
      match = nullOr types.str "event: ledger event type, exact or prefix with a trailing `*`.";
      path = nullOr types.str "webhook: path segment after `/webhook/` on the routines socket.";
      secretFile = nullOr types.str "webhook: file holding the HMAC-SHA256 secret (not in the store; readable by osmoda-routines).";
      replayWindowSecs = nullOr types.ints.positive
        "webhook: accepted clock distance of a request's timestamp, and how long a signature is remembered (null = ${toString d.webhookTrigger.replayWindowSecs}).";
    };
  };

  # Options of one action; a chain's steps are actions too (but not chains).
  actionOptions = {
    type = mkOption {
      type = types.enum [ "command" "http" "prompt" "chain" ];
      description = "What the routine does.";
    };
    command = nullOr (types.listOf types.str) "command: argv (no shell); runs behind the command boundary (osmoda-sandbox), or in the ring `sandbox` names.";
    sandbox = nullOr (types.enum [ "boundary" "ring1" "ring2" ])
      "command: where it runs (null = boundary: the machine read-only with secrets masked, as nobody). `ring2`: agentd's Ring 2 sandbox (`/sandbox/exec`: an empty root with only the software, no network, no daemon socket, as nobody, limits); `ring1`: Ring 2 plus the network of `capabilities` through osmoda-egress.";
    capabilities = nullOr (types.listOf types.str)
      "command, ring1: names of `services.osmoda.egress.capabilities` the command may reach; agentd mints a token for exactly these for each run.";
    memoryMb = nullOr types.ints.positive "command, ring1/ring2: memory budget in MiB (16-8192; null = 512).";
    maxTasks = nullOr types.ints.positive "command, ring1/ring2: processes and threads at once (8-4096; null = 128).";
    env = nullOr (types.attrsOf types.str) "command: extra environment variables.";
    user = nullOr types.str "command: user to run as (null = nobody, or the daemon's own user when it is not root).";
    outputLimitBytes = nullOr types.ints.positive
      "command: bytes of stdout and of stderr kept (null = ${toString d.commandAction.outputLimitBytes}).";
    timeoutSecs = nullOr types.ints.positive
      "command/http/prompt: time budget in seconds (null = ${toString d.commandAction.timeoutSecs} for commands, ${toString d.httpAction.timeoutSecs} for http, ${toString d.promptAction.timeoutSecs} for prompts).";
    socket = nullOr types.str "http: Unix socket of the daemon to call (null = agentd's).";
    method = nullOr (types.enum [ "GET" "POST" "DELETE" ]) "http: HTTP method.";
    path = nullOr types.str "http: API path, e.g. `/health`.";
    body = nullOr jsonFormat.type "http: JSON body for POST.";
    message = nullOr types.str "prompt: what the agent is asked, sent to the OpenClaw gateway as a user turn.";
  };

  actionModule = {
    options = actionOptions // {
      steps = nullOr (types.listOf (types.submodule { options = actionOptions; }))
        "chain: actions run in order, stopping at the first that fails.";
    };
  };

  routineModule = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = d.routine.enable;
        description = "Whether the routine fires.";
      };
      trigger = mkOption { type = types.submodule triggerModule; description = "When it runs."; };
      action = mkOption { type = types.submodule actionModule; description = "What it runs."; };
      missed = mkOption {
        type = types.enum [ "skip" "runOnce" ];
        default = d.routine.missed;
        description = "Scheduled runs missed while the daemon was down: dropped, or one run at start.";
      };
      jitterSecs = mkOption {
        type = types.ints.unsigned;
        default = d.routine.jitterSecs;
        description = "Each scheduled run starts up to this many seconds late (random).";
      };
      concurrency = mkOption {
        type = types.enum [ "skip" "queue" ];
        default = d.routine.concurrency;
        description = "When it fires while the previous run is still going: skip the new run, or queue it.";
      };
    };
  };

  amountType = types.either types.ints.unsigned (types.strMatching "[0-9]+");

  chainModule = {
    options = {
      chainIds = mkOption {
        type = types.listOf types.ints.unsigned;
        default = d.chainPolicy.chainIds;
        description = "Allowed EIP-155 chain ids (ethereum only). Limits, counters and `tokens` entries are shared by all of them: the native amounts of every listed chain id count against one `perTxMax`/`dailyLimit`, and a token entry covers its address on each listed chain id (where another contract may live). List one chain id per keyd where that matters.";
      };
      perTxMax = mkOption { type = amountType; description = "Largest single transaction, base units."; };
      dailyLimit = mkOption { type = amountType; description = "Total per UTC day on this chain, base units."; };
      approvalThreshold = nullOr amountType "Above this a human approval is required (null = never).";
      recipientAllowlist = nullOr (types.listOf types.str) "Allowed recipients (null = any): addresses of this chain. For approvals and permits the spender is judged, not where the spender then sends the tokens (a DEX router or order reactor listed here may move them anywhere, within the token's limits).";
      tokens = mkOption {
        type = types.attrsOf (types.submodule tokenModule);
        default = { };
        example = { "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48" = { perTxMax = "100000000"; dailyLimit = "1000000000"; }; };
        description = "ERC-20 tokens that may be transferred or approved, by contract address, with limits in the token's base units (ethereum only; any other token is denied).";
      };
      typedData = mkOption {
        type = types.listOf (types.submodule typedDataModule);
        default = [ ];
        # An attestation (EAS on mainnet) moves nothing; a marketplace's orders would.
        example = [ { chainId = 1; verifyingContract = "0xA1207F3BBa224E2c9c3c6D5aF63D0eb1582Ce587"; primaryTypes = [ "Attest" ]; } ];
        description = "EIP-712 domains whose typed data keyd may sign without judging it (ethereum only; any other typed data is denied). A listed domain's signatures can do whatever its contract honours, e.g. a marketplace order (Seaport `OrderComponents`) hands over anything the wallet approved to that marketplace for whatever the order asks: list only domains whose messages move no value. Permits (EIP-2612, DAI, Permit2) are always judged like the approve they authorise, by `tokens`.";
      };
    };
  };

  typedDataModule = {
    options = {
      chainId = mkOption { type = types.ints.unsigned; description = "The domain's EIP-155 `chainId` (one of `chainIds`)."; };
      verifyingContract = mkOption { type = types.str; description = "The domain's `verifyingContract` (0x + 40 hex)."; };
      primaryTypes = nullOr (types.listOf types.str) "Allowed `primaryType` names (null = any type of this domain).";
    };
  };

  tokenModule = {
    options = {
      perTxMax = mkOption { type = amountType; description = "Largest single transfer or approval, token base units."; };
      dailyLimit = mkOption { type = amountType; description = "Total per UTC day for this token, token base units."; };
      approvalThreshold = nullOr amountType "Above this a human approval is required (null = never).";
    };
  };

  walletModule = {
    options = {
      dailyLimit = mkOption { type = amountType; description = "Total per UTC day for this wallet."; };
      recipientAllowlist = nullOr (types.listOf types.str) "Allowed recipients (null = chain's list).";
    };
  };

  peerModule = {
    options = {
      endpoint = mkOption { type = types.str; description = "`host:port` to dial."; };
      publicKeys = {
        ed25519 = mkOption { type = types.str; description = "Ed25519 identity key (base64)."; };
        x25519 = mkOption { type = types.str; description = "X25519 Noise static key (base64)."; };
        mlKem768 = mkOption { type = types.str; description = "ML-KEM-768 encapsulation key (base64)."; };
      };
    };
  };

  capabilityModule = {
    options = {
      domains = mkOption {
        type = types.listOf types.str;
        description = "Allowed host names; `*.example.com` matches subdomains.";
      };
      ports = mkOption {
        type = types.listOf types.port;
        default = d.capability.ports;
        description = "Allowed destination ports.";
      };
      readOnlyPaths = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/srv/datasets" ];
        description = "Existing paths a Ring 1 sandbox (`/sandbox/exec`) granted this capability sees read-only, at the same place. agentd's state and the approval path stay hidden inside them.";
      };
      writablePaths = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/srv/scratch" ];
        description = "Existing paths such a sandbox may write; never the configuration tree or login files.";
      };
    };
  };

  # enable / package / socket, common to every daemon.
  daemonOptions = name: pkgAttr: {
    enable = mkOption {
      type = types.bool;
      default = d.${name}.enable;
      description = "Whether to run ${pkgAttr}.";
    };
    package = mkPackageOption pkgs pkgAttr { default = [ "osmoda" name ]; };
    socket = mkOption {
      type = types.str;
      default = d.${name}.socket;
      description = "Unix socket ${pkgAttr} serves its API on.";
    };
  };

  # What lib renders. The only NixOS-specific input is the evaluated option set.
  rendered = osmodaLib.render cfg;

  etcFile = name: "/etc/osmoda/${name}.json";

  # Build-time validation with the daemon's own schema (vector.nix style).
  checkedConfig = name: package:
    pkgs.runCommand "osmoda-${name}-json-checked"
      {
        json = builtins.toJSON rendered.${name};
        passAsFile = [ "json" ];
      } ''
      ${lib.getExe package} check-config "$jsonPath"
      touch $out
    '';

  # What the hardened baseline hides from a unit (ProtectHome, PrivateTmp).
  voiceHiddenDirs = [ "/home" "/root" "/run/user" "/tmp" "/var/tmp" ];
  # services.osmoda.voice.pipewireUser: that user's uid (as a string) and runtime dir.
  voicePwUid =
    if cfg.voice.pipewireUser == null then null
    else lib.mapNullable toString (config.users.users.${cfg.voice.pipewireUser} or { uid = null; }).uid;
  voicePwDir = if voicePwUid == null then cfg.voice.pipewireRuntimeDir else "/run/user/${voicePwUid}";
  voicePwGroup = let g = (config.users.users.${cfg.voice.pipewireUser} or { }).group or ""; in
    if g == "" then "nogroup" else g;

  # One hardened baseline for every unit; each daemon loosens it with a comment.
  hardening = {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    RestrictAddressFamilies = [ "AF_UNIX" ];
    UMask = "0077";
  };

  # A daemon's unit. `args` come after the flags every daemon takes.
  mkDaemon = { name, enable, package, socket, user, args ? [ ], serviceConfig ? { }, path ? [ ], extra ? { } }:
    mkIf enable (lib.recursiveUpdate
      {
        description = "osModa ${name} daemon";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ] ++ lib.optional (name != "agentd") "osmoda-agentd.service";
        inherit path;
        restartTriggers = [ config.environment.etc."osmoda/${name}.json".text ];
        serviceConfig = hardening // {
          Type = "notify";
          NotifyAccess = "main";
          # Room for the listener's connection budget (sized from this limit at start) above
          # systemd's default of 1,024, which a handful of idle clients could exhaust.
          LimitNOFILE = 65536;
          ExecStart = lib.escapeShellArgs ([
            (lib.getExe package)
            "--socket" socket
            "--config" (etcFile name)
            "--state-dir" "${cfg.stateDir}/${name}"
            "--agentd-socket" cfg.agentd.socket
          ] ++ args);
          User = user;
          Group = "osmoda";
          StateDirectory = "${stateDirRel}/${name}";
          StateDirectoryMode = "0700";
          # The API socket must be reachable by group osmoda (the gateway), so files this
          # daemon creates are group-accessible; the state dir stays 0700 above.
          UMask = "0007";
          # /run/osmoda is created by tmpfiles (root:osmoda 0770); ProtectSystem=strict
          # would make it read-only.
          ReadWritePaths = [ "/run/osmoda" ];
          Restart = "on-failure";
          RestartSec = 2;
        } // serviceConfig;
      }
      extra);

  stateDirRel = lib.removePrefix "/var/lib/" cfg.stateDir;

  gatewayUnit = "osmoda-gateway";
  credential = unit: file: "/run/credentials/${unit}.service/${file}";
  tg = cfg.gateway.channels.telegram;
  # Every option naming a secret file, set ones only (the assertions below keep them out of
  # the store; lib/ names the same list in routines.json's `daemon_secrets`).
  secretFiles = lib.filterAttrs (_: v: v != null) {
    "agentd.capabilityKeyFile" = cfg.agentd.capabilityKeyFile;
    "agentd.ledger.checkpoint.keyFile" = cfg.agentd.ledger.checkpoint.keyFile;
    "agentd.ledger.witness.keyFile" = cfg.agentd.ledger.witness.keyFile;
    "keyd.secretFile" = cfg.keyd.secretFile;
    "mesh.secretFile" = cfg.mesh.secretFile;
    "voice.gatewayTokenFile" = cfg.voice.gatewayTokenFile;
    "gateway.environmentFile" = cfg.gateway.environmentFile;
    "gateway.channels.telegram.botTokenFile" = tg.botTokenFile;
    "routines.gatewayTokenFile" = cfg.routines.gatewayTokenFile;
  } // lib.filterAttrs (_: v: v != null) (lib.mapAttrs'
    # Each routine's webhook secret (a routine is an attribute of `routines` with a `trigger`).
    (n: r: lib.nameValuePair "routines.${n}.trigger.secretFile" r.trigger.secretFile)
    (lib.filterAttrs (_: r: builtins.isAttrs r && r ? trigger) cfg.routines));
in
{
  options.services.osmoda = {
    enable = mkEnableOption "osModa: agentd, its daemons and the OpenClaw gateway";

    stateDir = mkOption {
      type = types.str;
      default = d.stateDir;
      description = "Parent of every daemon's state dir (`<stateDir>/<daemon>`); must be under /var/lib.";
    };

    configTree = mkOption {
      type = types.str;
      default = d.configTree;
      description = "The git-tracked Nix tree agentd edits and SafeSwitch applies.";
    };

    configTreeTemplate = mkOption {
      type = types.path;
      default = ../generations;
      defaultText = literalExpression "<osmoda>/generations";
      description = "Starter tree copied into `configTree` and committed as the first generation when `configTree` has no git repository yet.";
    };

    configRevision = mkOption {
      type = types.nullOr types.str;
      default = d.configRevision;
      example = literalExpression "self.rev or self.dirtyRev or null";
      description = "Git commit of the config tree this system was built from; becomes `system.configurationRevision`.";
    };

    approvalRequired = mkOption {
      type = types.listOf types.str;
      default = d.approvalRequired;
      description = "Operation kinds that need a single-use human approval ticket (trailing `*` = prefix).";
    };

    memory = {
      embeddingEndpoint = nullOr types.str "OpenAI-compatible embeddings URL (loopback); null = keyword recall only.";
      embeddingModel = mkOption { type = types.str; default = d.memory.embeddingModel; description = "Embedding model name."; };
      maxInjectedTokens = mkOption { type = types.ints.positive; default = d.memory.maxInjectedTokens; description = "Token budget recall may inject into one prompt."; };
      relevanceThresholds = mkOption {
        type = types.attrsOf types.float;
        default = d.memory.relevanceThresholds;
        example = { "nomic-embed-text-v2-moe" = 0.55; };
        description = ''
          Relevance threshold per embedding model name (`embeddingModel` for an endpoint): the cosine
          similarity in [-1, 1] (checked by agentd) a note sharing too few of the query's words must reach to be recalled. A threshold
          is measured for one model; all-MiniLM-L6-v2 (the in-process model) has a measured 0.35 built in.
          A model with none recalls only notes that share the query's words, and says so in each recall.
        '';
      };
      # The endpoint backend served on this machine: nixpkgs' services.llama-cpp (NixOS 24.05+).
      llamaCpp = {
        enable = mkEnableOption "an embedding server for memory: nixpkgs' `services.llama-cpp` serving `memory.llamaCpp.model` on loopback with embeddings on, and `memory.embeddingEndpoint` pointing at it (replacing the in-process model)";
        model = nullOr types.path "GGUF file of the embedding model llama.cpp serves, e.g. a nomic-embed-text-v2-moe GGUF (name it in `memory.embeddingModel`); required with `llamaCpp.enable`.";
        port = mkOption { type = types.port; default = 8431; description = "Loopback port of the llama.cpp server (`services.llama-cpp.port`)."; };
      };
    };

    agentd = daemonOptions "agentd" "agentd" // {
      agentctlPackage = mkPackageOption pkgs "agentctl" { default = [ "osmoda" "agentctl" ]; } // {
        description = "The agentctl command-line client, on the system's PATH with agentd (with git: the configuration tree is a git repository a person reads with `git log`).";
      };
      approvalSocket = mkOption {
        type = types.str;
        default = d.agentd.approvalSocket;
        description = "Root-only socket where a human decides approvals; never reachable by the agent.";
      };
      approvalTtlSecs = mkOption { type = types.ints.positive; default = d.agentd.approvalTtlSecs; description = "Lifetime of an approval ticket."; };
      criticalPackages = mkOption {
        type = types.listOf types.str;
        default = d.agentd.criticalPackages;
        description = "Packages whose removal by a switch needs approval.";
      };
      writableRoots = mkOption {
        type = types.listOf (types.strMatching "/.*");
        default = d.agentd.writableRoots;
        description = "Directories the agent writes without a person's approval (`/fs/write`, and `/system/exec` commands' writable paths); a write anywhere else, and of a login file or credential anywhere, opens an approval ticket. Empty: every write needs one.";
      };
      ledger.checkpoint = {
        enable = mkOption { type = types.bool; default = d.agentd.ledger.checkpoint.enable; description = "Sign checkpoints of the ledger's Merkle tree (C2SP tlog-checkpoint in an Ed25519 signed note), appended to checkpoints.jsonl in agentd's state dir and recorded in the ledger; `agentctl verify-ledger` checks the database against them."; };
        everyEvents = mkOption { type = types.ints.positive; default = d.agentd.ledger.checkpoint.everyEvents; description = "Sign a checkpoint after this many new events."; };
        intervalSecs = mkOption { type = types.ints.positive; default = d.agentd.ledger.checkpoint.intervalSecs; description = "Sign a checkpoint at least this often (seconds) while events arrive, and at shutdown."; };
        keyFile = nullOr types.str "Signed-note Ed25519 private key of the checkpoints (`agentctl ledger keygen --name <origin> --out <file>`), read by agentd (root) from this path, never the store; null = generated in agentd's state dir (mode 0600) on first start, named `<hostname>/osmoda-ledger/<16 hex digits of its public key's SHA-256>` (unique per machine: servers installed from one configuration share a hostname). With your own key, give every machine its own origin: witnesses and verifiers tell logs apart by origin and key.";
      };
      ledger.witness = {
        peers = mkOption { type = types.attrsOf types.str; default = d.agentd.ledger.witness.peers; description = "Mesh peers asked to cosign every ledger checkpoint: peer name → that peer's witness verifier key (its `/var/lib/osmoda/agentd/witness.vkey`). Needs `mesh.enable`."; };
        logs = mkOption { type = types.listOf types.str; default = d.agentd.ledger.witness.logs; description = "Checkpoint verifier keys (a peer's `checkpoint.vkey`) of the peers' ledgers this machine cosigns when they ask over the mesh, only after a consistency proof from what it cosigned before."; };
        keyFile = nullOr types.str "This machine's witness key (64 hex digits, an Ed25519 seed), read by agentd from this path, never the store; null = generated in agentd's state dir (mode 0600).";
      };
      backup = {
        dir = nullOr types.str "Directory of backup archives (`POST /backup/create`, `agentctl backup create`; root only, mode 0700, archives 0600: they hold the daemons' state); null = `<stateDir>/backups`.";
        keep = mkOption { type = types.nullOr types.ints.positive; default = d.agentd.backup.keep; description = "Retention after each new archive: the this many newest are kept, and the newest of each of the this many most recent days (a burst of backups never pushes out an earlier day's last one); the rest are deleted (`backup.deleted` events). Lowering it needs a person's approval (`audit.weaken`). null = keep all."; };
      };
      capabilityKeyFile = nullOr types.str "Ed25519 key (32 raw bytes or 64 hex) agentd signs osmoda-egress capability tokens with, passed as a systemd credential, never through the store; null = generated once in agentd's state dir (mode 0600).";
      validate = mkOption {
        type = types.enum [ "parse" "eval" "build" ];
        default = "eval";
        description = ''
          How config edits are validated before they are committed: `parse` (rnix only),
          `eval` (also the Nix evaluator on each changed file) or `build` (also a full NixOS
          evaluation of the tree with this module, as `nixos-rebuild build` would evaluate it,
          without building). `build` needs nixpkgs: `<nixpkgs>` must resolve in agentd's
          `NIX_PATH` (a channel or `nix.nixPath`); where it does not, every edit is refused as
          unavailable rather than committed unchecked.
        '';
      };
    };

    watch = daemonOptions "watch" "osmoda-watch" // {
      watchers = mkOption {
        type = types.attrsOf (types.submodule watcherModule);
        default = { };
        description = "Autopilot watchers by name.";
      };
      safeSwitch = {
        ttlSecs = mkOption { type = types.ints.positive; default = d.watch.safeSwitch.ttlSecs; description = "Default probation time of a switch."; };
        healthChecks = mkOption {
          type = types.listOf (types.submodule checkModule);
          default = d.watch.safeSwitch.healthChecks;
          description = "Checks every switch must pass.";
        };
      };
    };

    routines = mkOption {
      default = { };
      description = "osmoda-routines; every attribute other than enable/package/socket is a routine.";
      type = types.submodule {
        freeformType = types.attrsOf (types.submodule routineModule);
        options = daemonOptions "routines" "osmoda-routines" // {
          historyDays = mkOption {
            type = types.ints.positive;
            default = d.routines.historyDays;
            description = "Days of run history kept.";
          };
          gatewayTokenFile = nullOr types.str "File holding only the OpenClaw gateway's token (the value of `OPENCLAW_GATEWAY_TOKEN` in `services.osmoda.gateway.environmentFile`), loaded as the systemd credential `gateway-token` for `prompt` actions: the unit gets this one secret, never the gateway's environment file with the model API keys. With the gateway on and no token, the gateway refuses the routines' prompts.";
        };
      };
    };

    keyd = daemonOptions "keyd" "osmoda-keyd" // {
      secretFile = nullOr types.str "File with the key-encryption secret (at least 16 bytes), loaded into keyd as the systemd credential `secret` (never the store); null = 32 random bytes generated in the state dir (mode 0600) on first start.";
      maxWallets = mkOption {
        type = types.ints.between 1 1000000;
        default = d.keyd.maxWallets;
        description = "Most wallets keyd holds: a create (or import) beyond it is refused with 409 naming this option; lowering it deletes nothing. Every wallet is a sealed key and a ledger receipt, and creating one needs no approval, so the agent cannot make them without end.";
      };
      policy = {
        chains = mkOption {
          type = types.attrsOf (types.submodule chainModule);
          default = d.keyd.policy.chains;
          description = "Allowed chains (`ethereum`, `solana`) and their limits; absent = denied.";
        };
        wallets = mkOption {
          type = types.attrsOf (types.submodule walletModule);
          default = d.keyd.policy.wallets;
          description = "Per-wallet limits by wallet label.";
        };
      };
    };

    mesh = daemonOptions "mesh" "osmoda-mesh" // {
      listen = mkOption { type = types.str; default = d.mesh.listen; description = "TCP `host:port` for peer connections."; };
      openFirewall = mkOption { type = types.bool; default = d.mesh.openFirewall; description = "Open the listen port in the firewall."; };
      peers = mkOption { type = types.attrsOf (types.submodule peerModule); default = { }; description = "Known peers by name."; };
      secretFile = nullOr types.str "File with the key-encryption secret of the mesh identity (at least 16 bytes), loaded as the systemd credential `secret` (never the store); null = 32 random bytes generated in the state dir (mode 0600) on first start, beside the sealed identity (and in agentd's backups with it).";
    };

    egress = daemonOptions "egress" "osmoda-egress" // {
      listen = mkOption { type = types.str; default = d.egress.listen; description = "Loopback `host:port` of the CONNECT proxy."; };
      proxySocket = mkOption { type = types.str; default = "/run/osmoda/egress-proxy.sock"; description = "Unix socket where the proxy also accepts CONNECT; agentd binds it into Ring 1 sandboxes (`/sandbox/exec`), where `osmoda-egress relay` forwards to it."; };
      capabilities = mkOption {
        type = types.attrsOf (types.submodule capabilityModule);
        default = { };
        description = "Capabilities a sandbox token may name.";
      };
      publicKeyFile = mkOption { type = types.str; default = d.egress.publicKeyFile; description = "agentd's capability-token public key (hex), re-read when it changes."; };
      revocationFile = mkOption { type = types.str; default = d.egress.revocationFile; description = "Revoked token ids, one per line, re-read when it changes; a missing file revokes nothing."; };
      allowRanges = mkOption {
        type = types.listOf types.str;
        default = d.egress.allowRanges;
        example = [ "192.168.10.0/24" ];
        description = "CIDR ranges that may be dialled although private, loopback or otherwise special (and IP-literal targets inside them). For LANs and tests; empty by default.";
      };
      nameservers = mkOption {
        type = types.listOf types.str;
        default = d.egress.nameservers;
        example = [ "127.0.0.53:53" ];
        description = "DNS servers (`ip:port`) the proxy resolves with, instead of /etc/resolv.conf.";
      };
      limits = {
        headerTimeoutSecs = mkOption { type = types.ints.positive; default = d.egress.limits.headerTimeoutSecs; description = "Time for a client to send its whole CONNECT head."; };
        connectTimeoutSecs = mkOption { type = types.ints.positive; default = d.egress.limits.connectTimeoutSecs; description = "Time for resolving and connecting to a destination."; };
        idleTimeoutSecs = mkOption { type = types.ints.positive; default = d.egress.limits.idleTimeoutSecs; description = "A tunnel idle this long is closed."; };
        maxTunnels = mkOption { type = types.ints.positive; default = d.egress.limits.maxTunnels; description = "Tunnels open at once; more are refused (503)."; };
        ratePerMinute = mkOption { type = types.ints.positive; default = d.egress.limits.ratePerMinute; description = "CONNECTs per token per minute; more are refused (429)."; };
      };
    };

    voice = daemonOptions "voice" "osmoda-voice" // {
      whisperModel = nullOr types.str "whisper.cpp model file (ggml).";
      piperModel = nullOr types.str "piper voice model (.onnx; its .onnx.json beside it).";
      language = mkOption { type = types.str; default = d.voice.language; description = "Transcription language or `auto`."; };
      audioDirs = mkOption {
        type = types.listOf types.str;
        default = d.voice.audioDirs;
        description = "Directories besides its state dir whose WAV files osmoda-voice may transcribe or listen to (absolute; the unit gets read access to them).";
      };
      pipewireRuntimeDir = mkOption {
        type = types.str;
        default = d.voice.pipewireRuntimeDir;
        description = "Directory of the PipeWire socket (`pipewire-0`) osmoda-voice plays and records through: `/run/pipewire` for a system-wide PipeWire (`services.pipewire.systemWide`; the unit joins its group `pipewire`). Another directory must let user osmoda-voice reach the socket. For a person's own (user-session) PipeWire, set `pipewireUser` instead.";
      };
      pipewireUser = nullOr types.str "A user whose session PipeWire (`/run/user/<uid>/pipewire-0`) osmoda-voice plays and records through, instead of `pipewireRuntimeDir`; `users.users.<name>.uid` must be set. The unit starts that user's service manager with it (so its runtime dir and PipeWire exist from boot); after the user's last logout logind stops that manager unless `users.users.<name>.linger` is set, and the daemon stays up without an audio device until the next login. It sees that runtime dir alone under /run/user and is granted the socket by an ACL (`u:osmoda-voice:rw` on `pipewire-0`, search on the dir) that the user's own identity sets at each start (never root's: the names are the user's). Whoever can reach a PipeWire server can feed its sources: see `source`.";
      source = nullOr pipewireNodeName "The PipeWire node (`node.name`, e.g. `alsa_input.pci-0000_00_1f.3.analog-stereo`) `/voice/record` and `/voice/listen` capture from; null: the server's default source. Any client of the PipeWire server may create a source and make it the default, and what is captured reaches the agent as the owner's words: naming the microphone stops that (the recorder is linked to this node only: never to a fallback when it is missing or goes away, and a move another client asks for through the metadata is ignored). A client of the server can still link its own output into the recorder or into that source: access to the PipeWire server is the power to speak to the agent. A number is refused (pw-record reads `0` as \"link to nothing\"; WirePlumber takes numbers as object serials, which change).";
      gatewayTokenFile = nullOr types.str "File holding only the OpenClaw gateway's token (the value of `OPENCLAW_GATEWAY_TOKEN` in `services.osmoda.gateway.environmentFile`), loaded as the systemd credential `gateway-token`: the unit gets this one secret, never the gateway's environment file with the model API keys. With the gateway on and no token, the gateway refuses what `/voice/listen` hears.";
      memoryMax = mkOption {
        type = types.str;
        default = d.voice.memoryMax;
        example = "3G";
        description = "systemd `MemoryMax` of the unit, which holds whisper.cpp with its model and runs piper and PipeWire's clients. The default (1536M) holds what was measured with whisper tiny.en, with room: the daemon's peak (234 MiB), two audio files decoding at once (2 x 150 MiB at most) and two pipers at the longest text (236 MiB each), about 1.05 GiB; add the model's size twice for larger models (base: +0.3G, small: +1G, medium: +3G).";
      };
    };

    gateway = {
      enable = mkOption { type = types.bool; default = d.gateway.enable; description = "Run the OpenClaw gateway with the osmoda bridge."; };
      package = mkPackageOption pkgs "openclaw" { };
      bridgePackage = mkPackageOption pkgs "osmoda-bridge" { default = [ "osmoda" "bridge" ]; };
      port = mkOption { type = types.port; default = d.gateway.port; description = "Loopback port of the gateway."; };
      relaySocket = mkOption {
        type = types.str;
        default = d.gateway.relaySocket;
        description = "agentd's approval relay: the socket where the gateway passes on decisions people make in the chat. Its directory is setgid group osmoda-relay (only the gateway's user is a member) and masked from every command the agent runs.";
      };
      environmentFile = nullOr types.str "systemd EnvironmentFile with model API keys and OPENCLAW_GATEWAY_TOKEN.";
      channels.telegram = {
        enable = mkOption { type = types.bool; default = d.gateway.channels.telegram.enable; description = "Connect a Telegram bot."; };
        botTokenFile = nullOr types.str "File with the bot token (loaded as a systemd credential).";
        allowFrom = mkOption { type = types.listOf types.str; default = d.gateway.channels.telegram.allowFrom; description = "Telegram user ids allowed to talk to the agent."; };
      };
      channels.whatsapp = {
        enable = mkOption { type = types.bool; default = d.gateway.channels.whatsapp.enable; description = "Connect WhatsApp (paired by QR; its session lives in the gateway state dir)."; };
        allowFrom = mkOption { type = types.listOf types.str; default = d.gateway.channels.whatsapp.allowFrom; description = "Phone numbers allowed to talk to the agent."; };
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        { assertion = lib.hasPrefix "/var/lib/" cfg.stateDir; message = "services.osmoda.stateDir must be under /var/lib (systemd StateDirectory)."; }
        { assertion = !tg.enable || tg.botTokenFile != null; message = "services.osmoda.gateway.channels.telegram.botTokenFile is required when Telegram is enabled."; }
        { assertion = !cfg.gateway.enable || cfg.agentd.enable; message = "services.osmoda.gateway needs services.osmoda.agentd.enable."; }
      ] ++ map
        # A secret in the Nix store is world-readable (0444 for every user): never accepted,
        # whichever way it got there (`"${./secret}"`, `pkgs.writeText`, ...).
        (name: {
          assertion = !(lib.hasPrefix builtins.storeDir secretFiles.${name});
          message = "services.osmoda.${name} is in the Nix store (${secretFiles.${name}}), where every user can read it; give the path of a file outside the store that only root can read (e.g. under /run/keys or /var/lib/secrets).";
        })
        (builtins.attrNames secretFiles);

      # HEARTBEAT routines, each leaf overridable (`<name>.enable = false` turns one off).
      services.osmoda.routines = lib.mapAttrs (_: lib.mapAttrs (_: mkDefault)) d.heartbeatRoutines;

      # Normal priority: the option says which tree this system was built from, so it beats the
      # flakes' `mkDefault self.rev` fallback (modules/flake-module.nix).
      system.configurationRevision = mkIf (cfg.configRevision != null) cfg.configRevision;

      users.groups.osmoda = { };

      systemd.tmpfiles.rules = [
        "d /run/osmoda 0770 root osmoda -"
        "d ${builtins.dirOf cfg.agentd.approvalSocket} 0700 root root -"
      ] ++ lib.optionals cfg.gateway.enable [
        # setgid: the relay socket agentd binds here (0660) belongs to group osmoda-relay.
        "d ${builtins.dirOf cfg.gateway.relaySocket} 2750 root osmoda-relay -"
        "d ${cfg.configTree} 0700 root root -"
      ];

      environment.etc = lib.listToAttrs (map
        (name: {
          name = "osmoda/${name}.json";
          # A copied file (mode set), not a store symlink, so inotify on /etc/osmoda sees
          # the atomic replace at activation.
          value = { text = builtins.toJSON rendered.${name}; mode = "0444"; };
        })
        (lib.filter (n: cfg.${n}.enable) osmodaLib.daemonNames));
    }

    {
      system.checks = lib.optional cfg.agentd.enable (checkedConfig "agentd" cfg.agentd.package)
        ++ lib.optional cfg.watch.enable (checkedConfig "watch" cfg.watch.package)
        ++ lib.optional cfg.routines.enable (checkedConfig "routines" cfg.routines.package)
        ++ lib.optional cfg.keyd.enable (checkedConfig "keyd" cfg.keyd.package)
        ++ lib.optional cfg.mesh.enable (checkedConfig "mesh" cfg.mesh.package)
        ++ lib.optional cfg.egress.enable (checkedConfig "egress" cfg.egress.package)
        ++ lib.optional cfg.voice.enable (checkedConfig "voice" cfg.voice.package);

      # agentd's package, its client and git: a person (and install.sh's and push-deploy.sh's
      # probes) runs `agentctl` and reads the tree's history with git.
      environment.systemPackages = lib.optionals cfg.agentd.enable [
        cfg.agentd.package
        cfg.agentd.agentctlPackage
        pkgs.git
      ];

      # agentd and watch need a git tree with at least one commit; create it once.
      systemd.services.osmoda-config-tree = {
        description = "Create the osModa config tree (first generation)";
        wantedBy = [ "multi-user.target" ];
        before = [ "osmoda-agentd.service" "osmoda-watch.service" ];
        requiredBy = [ "osmoda-agentd.service" "osmoda-watch.service" ];
        unitConfig.ConditionPathExists = "!${cfg.configTree}/.git";
        path = [ pkgs.git config.nix.package pkgs.coreutils ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          UMask = "0077";
          PrivateTmp = true;
          NoNewPrivileges = true;
          ProtectHome = true;
        };
        script = ''
          install -d -m 0700 ${lib.escapeShellArg cfg.configTree}
          cp -r --no-preserve=mode,ownership ${cfg.configTreeTemplate}/. ${lib.escapeShellArg cfg.configTree}/
          cd ${lib.escapeShellArg cfg.configTree}
          git init -q -b main
          # Flakes only see tracked files.
          git add -A
          if ! nix --extra-experimental-features "nix-command flakes" flake lock; then
            echo "flake.lock not written (offline?); the first build will lock the inputs" >&2
          fi
          git add -A
          git -c user.name=osmoda -c user.email=osmoda@localhost commit -q -m "Initial generation"
        '';
      };

      # agentd: Ring 0. It runs as root because it operates the machine for the agent.
      systemd.services.osmoda-agentd = mkDaemon {
        name = "agentd";
        enable = cfg.agentd.enable;
        package = cfg.agentd.package;
        socket = cfg.agentd.socket;
        user = "root";
        args = [ "--approval-socket" cfg.agentd.approvalSocket "--config-tree" cfg.configTree
                 "--validate" cfg.agentd.validate "--keyd-user" "osmoda-keyd" ]
          # The module itself (with ../lib beside it), for the full evaluation.
          ++ lib.optionals (cfg.agentd.validate == "build") [ "--nixos-module" "${../.}/modules/osmoda.nix" ]
          ++ lib.optionals cfg.gateway.enable [ "--relay-socket" cfg.gateway.relaySocket "--relay-user" "osmoda-gateway" ]
          # Ring 1 sandboxes: egress's socket and its binary, whose relay runs inside.
          ++ lib.optionals cfg.egress.enable [ "--egress-proxy-socket" cfg.egress.proxySocket "--egress-bin" (lib.getExe cfg.egress.package) ]
          ++ lib.optionals (cfg.agentd.capabilityKeyFile != null) [ "--capability-key" (credential "osmoda-agentd" "capability-key") ]
          # The memory dir backups archive (lib/default.nix `backup.sources.memory`), and recall's
          # in-process embedding model unless an endpoint replaces it.
          ++ [ "--memory-dir" "${cfg.stateDir}/memory" ]
          ++ lib.optionals (cfg.memory.embeddingEndpoint == null && pkgs ? osmoda && pkgs.osmoda ? memory-model)
            [ "--memory-model" "${pkgs.osmoda.memory-model}" ];
        # bubblewrap and setpriv build the command sandboxes (/system/exec, /sandbox/exec).
        path = [ config.nix.package pkgs.git config.systemd.package pkgs.bubblewrap pkgs.util-linux ];
        serviceConfig = {
          # The filesystem, process and service APIs act on the whole system by design.
          ProtectSystem = "full";
          ProtectHome = false;
          ProtectProc = "default";
          ProcSubset = "all";
          # Kernel-parameter queries read /proc/sys.
          ProtectKernelTunables = false;
          # SO_PEERCRED actors: resolving /proc/<pid>/exe of other users needs ptrace
          # access; reading any file for the agent needs DAC_READ_SEARCH.
          # A backup restore writes the other daemons' state files back as their owners
          # (DAC_OVERRIDE, FOWNER, CHOWN). The command sandboxes (/system/exec, /sandbox/exec)
          # are bubblewrap run by agentd as root: new mount, PID, IPC, UTS, network and cgroup
          # namespaces (mounts, pivot_root, their loopback brought up), setpriv to nobody with
          # the bounding set dropped, a cgroup per run and killing what is left in it. A command
          # itself has none of this: it runs with no capabilities, no_new_privs and a seccomp
          # filter (osmoda-sandbox).
          CapabilityBoundingSet = [ "CAP_SYS_PTRACE" "CAP_DAC_READ_SEARCH" "CAP_DAC_OVERRIDE" "CAP_FOWNER" "CAP_CHOWN"
                                    "CAP_SYS_ADMIN" "CAP_SETUID" "CAP_SETGID" "CAP_SETPCAP" "CAP_NET_ADMIN" "CAP_KILL"
                                    "CAP_SYS_RESOURCE" ];
          RestrictNamespaces = false;
          ProtectControlGroups = false;
          # Root's own operations (chown of files it writes for the agent) are privileged
          # calls; bubblewrap mounts and unshares.
          SystemCallFilter = [ "@system-service" "@mount" "unshare" "setns" "pivot_root" ];
          # The commands it runs in the boundary inherit the unit's seccomp filters: JIT
          # runtimes (node, java, luajit) need writable+executable memory; osmoda-sandbox's
          # own filter and namespaces are their boundary.
          MemoryDenyWriteExecute = false;
          # Network info (netlink) and loopback health probes.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_NETLINK" "AF_INET" "AF_INET6" ];
          ReadWritePaths = [ "/run/osmoda" (builtins.dirOf cfg.agentd.approvalSocket) cfg.configTree ]
            ++ lib.optional cfg.gateway.enable (builtins.dirOf cfg.gateway.relaySocket);
          # Created by agentd before other daemons start; kept across agentd restarts.
          RuntimeDirectory = "osmoda";
          RuntimeDirectoryMode = "0770";
          RuntimeDirectoryPreserve = "yes";
          LoadCredential = lib.optional (cfg.agentd.capabilityKeyFile != null) "capability-key:${cfg.agentd.capabilityKeyFile}";
        };
      };

      # watch: applies generations. Activation runs in a transient unit (systemd-run), so a
      # switch survives the daemon; network and filesystem stay confined as far as the
      # boot-default step allows.
      systemd.services.osmoda-watch = mkDaemon {
        name = "watch";
        enable = cfg.watch.enable;
        package = cfg.watch.package;
        socket = cfg.watch.socket;
        # root: systemd-run, restarting units over D-Bus and the boot-default step below.
        user = "root";
        args = [ "--backend" "nixos" "--config-tree" cfg.configTree ];
        # bubblewrap + setpriv (util-linux): every `command` check runs behind the boundary.
        path = [ config.system.build.nixos-rebuild config.nix.package pkgs.git config.systemd.package
                 pkgs.bubblewrap pkgs.util-linux ];
        serviceConfig = {
          # http/tcp health checks probe loopback services.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          # process checks look at every process.
          ProtectProc = "default";
          ProcSubset = "all";
          # Making a generation the boot default (`nix-env -p .../system --set` and
          # `switch-to-configuration boot`) writes the system profile, /boot and EFI
          # variables, like `nixos-rebuild boot`: that step needs root's full power.
          ProtectSystem = false;
          PrivateDevices = false;
          ProtectKernelTunables = false;
          # Command checks: bwrap (as root) creates the masking mount namespace, setpriv
          # switches to the check's user and empties (or, for root checks, reduces) its
          # capability bounding set, so a command never holds CAP_SYS_ADMIN/CAP_SYS_PTRACE/
          # CAP_SYS_MODULE and cannot undo the masks (osmoda-sandbox).
          CapabilityBoundingSet = [ "CAP_SYS_ADMIN" "CAP_DAC_OVERRIDE" "CAP_FOWNER" "CAP_CHOWN"
                                    "CAP_SETUID" "CAP_SETGID" "CAP_SETPCAP" ];
          RestrictNamespaces = [ "mnt" "pid" "ipc" ];
          SystemCallFilter = [ "@system-service" "@mount" "unshare" ];
          # The commands it runs in the boundary inherit the unit's seccomp filters: JIT
          # runtimes (node, java, luajit) need writable+executable memory; osmoda-sandbox's
          # own filter and namespaces are their boundary.
          MemoryDenyWriteExecute = false;
        };
        # A switch must never kill its own supervisor; watch picks up watch.json changes
        # through its file watcher instead.
        extra.restartIfChanged = false;
      };

      # routines: runs what the agent schedules, so every command action goes through the
      # boundary (osmoda-sandbox) as this unprivileged user.
      systemd.services.osmoda-routines = mkDaemon {
        name = "routines";
        enable = cfg.routines.enable;
        package = cfg.routines.package;
        socket = cfg.routines.socket;
        user = "osmoda-routines";
        # /routine/add and /routine/remove apply their generation with SafeSwitch. A prompt
        # action sends the gateway's token only to a port held by the gateway's own user (any
        # local user can bind the port while the gateway is down).
        args = [ "--watch-socket" cfg.watch.socket ]
          ++ lib.optionals cfg.gateway.enable [ "--gateway-user" "osmoda-gateway" ]
          ++ lib.optionals (cfg.routines.gatewayTokenFile != null)
          [ "--gateway-token-file" (credential "osmoda-routines" "gateway-token") ];
        # bubblewrap + setpriv (util-linux): the command boundary.
        path = [ config.systemd.package pkgs.coreutils pkgs.bubblewrap pkgs.util-linux ];
        extra.after = [ "network.target" "osmoda-agentd.service" ]
          ++ lib.optional cfg.watch.enable "osmoda-watch.service";
        serviceConfig = {
          # The log-scan routine reads the journal.
          SupplementaryGroups = [ "systemd-journal" ];
          ProtectProc = "default";
          ProcSubset = "all";
          # Command actions run in bubblewrap's unprivileged user namespace (with mount, PID
          # and IPC namespaces inside it), which mounts a read-only root, a fresh /proc and
          # /tmp and the masks over the approval path and agentd's/keyd's state.
          RestrictNamespaces = [ "user" "mnt" "pid" "ipc" ];
          SystemCallFilter = [ "@system-service" "@mount" "unshare" ];
          # The commands it runs in the boundary inherit the unit's seccomp filters: JIT
          # runtimes (node, java, luajit) need writable+executable memory; osmoda-sandbox's
          # own filter and namespaces are their boundary.
          MemoryDenyWriteExecute = false;
          # Prompt actions reach the OpenClaw gateway on loopback TCP.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          # The gateway's token alone, for prompt actions (the daemon reads it at start and
          # hands it to no child); never the gateway's environment file with the model keys.
          LoadCredential = lib.optional (cfg.routines.gatewayTokenFile != null)
            "gateway-token:${cfg.routines.gatewayTokenFile}";
          # The token must never reach a core dump.
          LimitCORE = 0;
        };
      };

      # keyd: no network at all, its own user (agentd trusts that uid alone to open and use
      # wallet approval tickets). The key-encryption secret arrives as the systemd credential
      # `secret` (systemd reads secretFile, the unit sees a private copy), never through the store.
      systemd.services.osmoda-keyd = mkDaemon {
        name = "keyd";
        enable = cfg.keyd.enable;
        package = cfg.keyd.package;
        socket = cfg.keyd.socket;
        user = "osmoda-keyd";
        serviceConfig = {
          PrivateNetwork = true;
          # Key material must never reach a core dump.
          LimitCORE = 0;
          LoadCredential = lib.optional (cfg.keyd.secretFile != null) "secret:${cfg.keyd.secretFile}";
        };
      };

      systemd.services.osmoda-mesh = mkDaemon {
        name = "mesh";
        enable = cfg.mesh.enable;
        package = cfg.mesh.package;
        socket = cfg.mesh.socket;
        user = "osmoda-mesh";
        # Accepting an invite (or a peer's identity hand-over) records the peer as a generation
        # through agentd's config API and applies it with SafeSwitch.
        args = [ "--watch-socket" cfg.watch.socket ];
        extra.after = [ "network.target" "osmoda-agentd.service" ]
          ++ lib.optional cfg.watch.enable "osmoda-watch.service";
        serviceConfig = {
          # Peers connect over TCP.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          # The identity's private keys must never reach a core dump.
          LimitCORE = 0;
          LoadCredential = lib.optional (cfg.mesh.secretFile != null) "secret:${cfg.mesh.secretFile}";
        };
      };

      systemd.services.osmoda-egress = mkDaemon {
        name = "egress";
        enable = cfg.egress.enable;
        package = cfg.egress.package;
        socket = cfg.egress.socket;
        user = "osmoda-egress";
        # The socket agentd binds into Ring 1 sandboxes (mode 0666: the token is the credential).
        args = [ "--proxy-socket" cfg.egress.proxySocket ];
        serviceConfig = {
          # It is the one path to the internet for sandboxes: it dials out.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          # Nothing it keeps is secret, but tokens pass through its memory.
          LimitCORE = 0;
          PrivateUsers = true;
        };
      };

      # A system-wide PipeWire grants its socket to group pipewire (declared here too, so the
      # unit can start where PipeWire is not system-wide).
      users.groups.pipewire = mkIf cfg.voice.enable { };

      # ProtectHome hides /home, /root and /run/user and PrivateTmp gives the unit its own /tmp
      # and /var/tmp, and systemd skips a missing `-` path without a word: a directory there
      # would silently hold nothing for osmoda-voice, so it is refused here by name.
      assertions = lib.optionals cfg.voice.enable (map
        (o: {
          assertion = !(lib.any (pre: lib.hasPrefix "${pre}/" "${o.path}/") voiceHiddenDirs);
          message = "services.osmoda.voice.${o.option} = \"${o.path}\" is under ${lib.concatStringsSep ", " voiceHiddenDirs}, which the osmoda-voice unit cannot see (ProtectHome, PrivateTmp); use a directory elsewhere (e.g. under /srv or /var/lib), or services.osmoda.voice.pipewireUser for a person's session PipeWire.";
        })
        ([{ option = "pipewireRuntimeDir"; path = cfg.voice.pipewireRuntimeDir; }]
          ++ map (p: { option = "audioDirs"; path = p; }) cfg.voice.audioDirs))
        ++ lib.optionals (cfg.voice.enable && cfg.voice.pipewireUser != null) [
          {
            assertion = (config.users.users.${cfg.voice.pipewireUser} or { uid = null; }).uid != null;
            message = "services.osmoda.voice.pipewireUser = \"${cfg.voice.pipewireUser}\" needs users.users.${cfg.voice.pipewireUser}.uid set: the unit names that user's runtime dir (/run/user/<uid>) when it is built.";
          }
          {
            assertion = cfg.voice.pipewireRuntimeDir == d.voice.pipewireRuntimeDir;
            message = "services.osmoda.voice.pipewireUser and services.osmoda.voice.pipewireRuntimeDir both name a PipeWire; set one (pipewireUser uses /run/user/<uid>).";
          }
        ];

      warnings = lib.optional (cfg.voice.enable && cfg.gateway.enable && cfg.voice.gatewayTokenFile == null)
        "services.osmoda.voice.gatewayTokenFile is not set: the gateway will refuse what /voice/listen hears (it needs the gateway's token; the voice unit no longer reads the gateway's environmentFile)."
      ++ lib.optional (cfg.routines.enable && cfg.gateway.enable && cfg.routines.gatewayTokenFile == null)
        "services.osmoda.routines.gatewayTokenFile is not set: the gateway will refuse the routines' prompt actions, the morning briefing included (they need the gateway's token; the routines unit no longer reads the gateway's environmentFile).";

      systemd.services.osmoda-voice = mkDaemon {
        name = "voice";
        enable = cfg.voice.enable;
        package = cfg.voice.package;
        socket = cfg.voice.socket;
        user = "osmoda-voice";
        args = lib.optionals (cfg.voice.gatewayTokenFile != null)
          [ "--gateway-token-file" (credential "osmoda-voice" "gateway-token") ]
          ++ lib.optionals (cfg.voice.source != null) [ "--source" cfg.voice.source ];
        # A person's session PipeWire lives as long as that user's service manager: start it
        # with the unit and start the unit with it. After the person's last logout logind stops
        # it (unless `users.users.<name>.linger`); the daemon stays up without an audio device.
        extra = lib.optionalAttrs (voicePwUid != null) {
          wants = [ "user@${voicePwUid}.service" ];
          after = [ "network.target" "osmoda-agentd.service" "user@${voicePwUid}.service" ];
          wantedBy = [ "multi-user.target" "user@${voicePwUid}.service" ];
        };
        # Speech runs locally: whisper.cpp is linked in; piper speaks, pw-play/pw-record move audio.
        path = [ pkgs.piper-tts pkgs.pipewire ];
        serviceConfig = {
          # Nothing heard or said leaves the machine: no network at all (AF_UNIX only, from the
          # baseline). The gateway is reached through osmoda-voice-gateway's socket.
          PrivateNetwork = true;
          # The children need calls the baseline's `~@resources` kills (SIGSYS): piper's
          # onnxruntime pins its threads and binds memory (sched_setaffinity, mbind), and
          # PipeWire's clients set their scheduling (sched_setscheduler; RestrictRealtime still
          # refuses the real-time classes). Calls outside the filter fail with EPERM instead of
          # killing the process, so a child that probes one carries on.
          SystemCallFilter = [ "@system-service" "~@privileged" ];
          SystemCallErrorNumber = "EPERM";
          # PipeWire owns the sound devices; the unit only needs its socket (and the group a
          # system-wide PipeWire gives it to).
          SupplementaryGroups = [ "audio" "pipewire" ];
          Environment = [ "PIPEWIRE_RUNTIME_DIR=${voicePwDir}" ];
          ReadWritePaths = [ "/run/osmoda" ] ++ lib.optional (voicePwUid == null) "-${voicePwDir}";
          ReadOnlyPaths = map (p: "-${p}") cfg.voice.audioDirs;
          # The gateway's token alone, for the utterances /voice/listen sends to the agent (the
          # daemon reads it at start and passes it to no child).
          LoadCredential = lib.optional (cfg.voice.gatewayTokenFile != null)
            "gateway-token:${cfg.voice.gatewayTokenFile}";
          # The token and what the microphone heard must never reach a core dump.
          LimitCORE = 0;
          # The whole cgroup: the daemon with its model, piper and the recorders.
          MemoryMax = cfg.voice.memoryMax;
        } // lib.optionalAttrs (voicePwUid != null) {
          # A person's PipeWire (pipewireUser): /run/user is an empty read-only tmpfs in the
          # unit (instead of hidden), with that user's runtime dir alone bound into it.
          ProtectHome = "tmpfs";
          BindReadOnlyPaths = [ voicePwDir ];
          # The session socket is the user's (0700 dir, socket without write for others):
          # before each start this unit's user is granted search on the dir and the socket
          # alone, nothing else of the user's runtime files. The grant runs as that user, not
          # root ("+" only to switch, outside the sandbox): the names are the user's to point
          # anywhere (a `pipewire-0` linked to /etc/shadow), and as the user setfacl can change
          # only the user's own files. A user without a PipeWire socket leaves the daemon
          # without an audio device ("-"), which /voice/status then says; transcription and
          # speech files still work.
          ExecStartPre = let
            asUser = "${pkgs.util-linux}/bin/setpriv --reuid=${voicePwUid} --regid=${voicePwGroup} --clear-groups";
          in [
            "+${asUser} ${pkgs.acl}/bin/setfacl -m u:osmoda-voice:x ${voicePwDir}"
            "-+${asUser} ${pkgs.acl}/bin/setfacl -m u:osmoda-voice:rw ${voicePwDir}/pipewire-0"
          ];
        };
      };

      # osmoda-voice has no network: this socket, beside its own, forwards to the gateway's
      # loopback port (`osmoda-voice gateway-proxy`, started on the first connection).
      systemd.sockets.osmoda-voice-gateway = mkIf (cfg.voice.enable && cfg.gateway.enable) {
        description = "osmoda-voice's way to the OpenClaw gateway";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ (osmodaLib.voiceGatewaySocket cfg.voice.socket) ];
        socketConfig = {
          SocketUser = "osmoda-voice";
          SocketGroup = "osmoda";
          SocketMode = "0600";
        };
      };
      # The gateway's port is loopback TCP, which any local user may bind while the gateway is
      # not on it: the proxy passes a connection on only once the kernel's socket table shows
      # the gateway's user holding the port (as osmoda-routines does for its prompts), so a
      # squatter never gets the token or what was said.
      systemd.services.osmoda-voice-gateway = mkIf (cfg.voice.enable && cfg.gateway.enable) {
        description = "Forward osmoda-voice's socket to the OpenClaw gateway";
        requires = [ "osmoda-voice-gateway.socket" ];
        after = [ "osmoda-voice-gateway.socket" "${gatewayUnit}.service" ];
        serviceConfig = hardening // {
          Type = "notify";
          ExecStart = lib.escapeShellArgs [
            (lib.getExe cfg.voice.package)
            "gateway-proxy"
            "--to" "127.0.0.1:${toString cfg.gateway.port}"
            "--gateway-user" "osmoda-gateway"
          ];
          DynamicUser = true;
          # Who holds the port is read from /proc/net/tcp{,6}, which ProcSubset=pid hides.
          ProcSubset = "all";
          # The one loosening: it dials the gateway's loopback port.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" ];
          IPAddressAllow = [ "127.0.0.1" ];
          IPAddressDeny = "any";
        };
      };

      users.users = lib.genAttrs
        (lib.optional cfg.routines.enable "osmoda-routines"
          ++ lib.optional cfg.keyd.enable "osmoda-keyd"
          ++ lib.optional cfg.mesh.enable "osmoda-mesh"
          ++ lib.optional cfg.egress.enable "osmoda-egress"
          ++ lib.optional cfg.voice.enable "osmoda-voice")
        (_: { isSystemUser = true; group = "osmoda"; });

      networking.firewall.allowedTCPPorts = lib.optional (cfg.mesh.enable && cfg.mesh.openFirewall)
        (lib.toInt (lib.last (lib.splitString ":" cfg.mesh.listen)));
    }

    # Memory's endpoint backend: llama.cpp on loopback. Defined only where nixpkgs declares
    # services.llama-cpp (deciding on `options`, not `config`, so no recursion); elsewhere the
    # assertion says what is missing.
    (mkIf cfg.memory.llamaCpp.enable (mkMerge [ {
      assertions = [
        { assertion = options ? services.llama-cpp; message = "services.osmoda.memory.llamaCpp needs nixpkgs' services.llama-cpp module (NixOS 24.05 or later)."; }
        { assertion = cfg.memory.llamaCpp.model != null; message = "services.osmoda.memory.llamaCpp.model: set the GGUF file of the embedding model llama.cpp should serve."; }
      ];
      services.osmoda.memory.embeddingEndpoint = mkDefault "http://127.0.0.1:${toString cfg.memory.llamaCpp.port}/v1/embeddings";
      systemd.services.osmoda-agentd = {
        wants = [ "llama-cpp.service" ];
        after = [ "llama-cpp.service" ];
      };
    } (lib.optionalAttrs (options ? services.llama-cpp) {
      services.llama-cpp = {
        enable = true;
        model = cfg.memory.llamaCpp.model;
        host = "127.0.0.1";
        port = cfg.memory.llamaCpp.port;
        # /v1/embeddings with mean pooling (nomic-embed-text's and all-MiniLM's).
        extraFlags = [ "--embeddings" "--pooling" "mean" ];
      } // lib.optionalAttrs (options.services.llama-cpp ? modelsDir) {
        # Newer nixpkgs declares modelsDir without a default; one model file is served here.
        modelsDir = mkDefault null;
      };
    }) ]))

    (mkIf cfg.gateway.enable {
      # osmoda-relay: only the gateway may use agentd's approval relay (agentd checks its uid too).
      users.groups.osmoda-relay = { };
      users.users.osmoda-gateway = { isSystemUser = true; group = "osmoda"; extraGroups = [ "osmoda-relay" ]; home = "${cfg.stateDir}/gateway"; };

      environment.etc."openclaw/openclaw.json".text = builtins.toJSON (osmodaLib.renderGateway
        (cfg // {
          gateway = cfg.gateway // {
            channels = cfg.gateway.channels // {
              telegram = tg // { botTokenFile = if tg.botTokenFile == null then null else credential gatewayUnit "telegram-bot-token"; };
            };
          };
        })
        { bridgePath = "${cfg.gateway.bridgePackage}/lib/osmoda-bridge"; });

      systemd.services.${gatewayUnit} = {
        description = "OpenClaw gateway (osModa operator)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" "osmoda-agentd.service" ];
        wants = [ "network-online.target" ];
        restartTriggers = [ config.environment.etc."openclaw/openclaw.json".text ];
        environment = {
          OPENCLAW_CONFIG_PATH = "/etc/openclaw/openclaw.json";
          OPENCLAW_STATE_DIR = "${cfg.stateDir}/gateway";
        };
        serviceConfig = hardening // {
          # osModa's skills and agent templates (AGENTS.md, TOOLS.md, ...) into the agent's
          # workspace (OpenClaw's <state dir>/workspace) before each start, so a new system
          # brings their new versions; the person's SOUL/IDENTITY/USER.md are never overwritten.
          ExecStartPre = "${pkgs.bash}/bin/bash ${../scripts/install-workspace.sh} ${../skills} ${../templates} ${cfg.stateDir}/gateway/workspace";
          ExecStart = "${lib.getExe cfg.gateway.package} gateway --port ${toString cfg.gateway.port}";
          # Its own user in the agent group: it reaches the agent sockets in /run/osmoda, never
          # the approval path (a 0700 root directory) or the daemons' secrets; hidden as well,
          # so not even a file-permission mistake can expose them.
          User = "osmoda-gateway";
          Group = "osmoda";
          InaccessiblePaths = [
            "-${builtins.dirOf cfg.agentd.approvalSocket}"
            "-${cfg.stateDir}/agentd"
            "-${cfg.stateDir}/keyd"
          ];
          StateDirectory = "${stateDirRel}/gateway";
          StateDirectoryMode = "0700";
          EnvironmentFile = lib.optional (cfg.gateway.environmentFile != null) cfg.gateway.environmentFile;
          LoadCredential = lib.optional (tg.enable && tg.botTokenFile != null) "telegram-bot-token:${tg.botTokenFile}";
          # Chat channels and model APIs are on the internet.
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          # Node's JIT needs writable+executable memory.
          MemoryDenyWriteExecute = false;
          Restart = "on-failure";
          RestartSec = 5;
        };
      };
    })
  ]);
}
