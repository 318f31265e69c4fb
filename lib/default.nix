# Pure osModa rendering functions (builtins only, no nixpkgs).
#
# Shared by the NixOS module (modules/osmoda.nix) and agentd's local apply backend, so both
# write byte-identical /etc/osmoda/<daemon>.json for the same `services.osmoda` settings.
#
#   (import ./lib).render cfg      -> { agentd = {..}; watch = {..}; ...; voice = {..}; }
#   (import ./lib).renderGateway cfg { bridgePath = "..."; } -> OpenClaw's openclaw.json
#   (import ./lib).unsupported cfg -> [ "services.osmoda.x.package" ... ]
#   (import ./lib).defaults        -> every default, camelCase, shaped like services.osmoda
#
# `cfg` is a possibly partial `services.osmoda` attrset as written in osmoda.nix, or the
# fully evaluated option set from the module (where unset nullable options are null).
# Rules: null means "absent"; defaults are filled here (the module takes its defaults from
# `defaults`); keys this file does not know are passed through (snake_cased) so that the
# schema's deny_unknown_fields rejects a typo instead of silently ignoring it; a required
# value that is missing is left out, so check-config names the missing field.
let
  inherit (builtins)
    attrNames concatStringsSep dirOf elem filter genList isInt listToAttrs mapAttrs removeAttrs
    stringLength substring;

  upper = {
    A = "a"; B = "b"; C = "c"; D = "d"; E = "e"; F = "f"; G = "g"; H = "h"; I = "i";
    J = "j"; K = "k"; L = "l"; M = "m"; N = "n"; O = "o"; P = "p"; Q = "q"; R = "r";
    S = "s"; T = "t"; U = "u"; V = "v"; W = "w"; X = "x"; Y = "y"; Z = "z";
  };

  # "expectStatus" -> "expect_status"
  toSnake = s:
    concatStringsSep "" (map (c: if upper ? ${c} then "_" + upper.${c} else c)
      (genList (i: substring i 1 s) (stringLength s)));

  # Attribute value, or `default` when absent or null.
  get = set: name: default:
    if set ? ${name} && set.${name} != null then set.${name} else default;

  dropNulls = set: removeAttrs set (filter (n: set.${n} == null) (attrNames set));

  snakeKeys = set:
    listToAttrs (map (n: { name = toSnake n; value = set.${n}; }) (attrNames (dropNulls set)));

  # Optional JSON key: { key = value; } when value is present, else {}.
  opt = key: set: name:
    if set ? ${name} && set.${name} != null then { ${key} = set.${name}; } else { };

  # Keys of `set` not in `known`, snake_cased: rendered so the schema rejects them.
  extra = set: known: snakeKeys (removeAttrs set known);

  # Amounts are decimal strings in JSON (wei do not fit Nix ints); accept ints for convenience.
  amount = v: if isInt v then toString v else v;
  optAmount = key: set: name:
    if set ? ${name} && set.${name} != null then { ${key} = amount set.${name}; } else { };

  daemonNames = [ "agentd" "watch" "routines" "keyd" "mesh" "egress" "voice" ];

  # The socket through which osmoda-voice (no network) reaches the gateway, beside its own.
  voiceGatewaySocket = voiceSocket: "${dirOf voiceSocket}/voice-gateway.sock";

  # Option names under services.osmoda.<daemon> that configure systemd, not the JSON.
  serviceKeys = [ "enable" "package" "socket" ];

  defaults = {
    enable = false;
    stateDir = "/var/lib/osmoda";
    configTree = "/var/lib/osmoda/config";
    configRevision = null;
    # Operation kinds that need a human approval ticket (DESIGN.md §4). These are agentd's
    # code defaults (crates/agentd/src/gate/mod.rs, DEFAULT_REQUIRED), rendered so the file
    # says what holds; agentd.json can add kinds, never remove these.
    approvalRequired = [
      "service.remove"
      "service.disable"
      "user.remove"
      "user.demote"
      "user.credentials"
      "ssh.access"
      "firewall.ssh"
      "wallet.delete"
      "wallet.send.over_threshold"
      "mesh.peer.remove"
      "capability.remove"
      "package.remove_critical"
      "switch.remove_critical"
      "gate.undecidable"
    ];
    memory = {
      embeddingEndpoint = null;
      embeddingModel = "nomic-embed-text-v2-moe";
      maxInjectedTokens = 1500;
      # By model name; all-MiniLM-L6-v2's measured 0.35 is built into agentd.
      relevanceThresholds = { };
    };
    agentd = {
      enable = true;
      socket = "/run/osmoda/agentd.sock";
      # Outside /run/osmoda on purpose: only root may reach it, never the agent's tools.
      approvalSocket = "/run/osmoda-admin/approval.sock";
      approvalTtlSecs = 900;
      criticalPackages = [ "openssh" "systemd" "nix" "osmoda-agentd" ];
      # agentd's code default (osmoda_config::DEFAULT_WRITABLE_ROOTS).
      writableRoots = [ "/tmp" "/var/tmp" "/srv" "/opt" "/home" "/var/lib" "/var/cache" "/var/www" ];
      ledger.checkpoint = {
        enable = true;
        everyEvents = 1000;
        intervalSecs = 60;
        keyFile = null;
      };
      # Witnesses over mesh links: none unless configured.
      ledger.witness = {
        peers = { };
        logs = [ ];
        keyFile = null;
      };
      # Archives of POST /backup/create; null dir = <stateDir>/backups.
      backup = {
        dir = null;
        keep = 7;
      };
    };
    watch = {
      enable = true;
      socket = "/run/osmoda/watch.sock";
      watchers = { };
      safeSwitch = {
        ttlSecs = 120;
        healthChecks = [ { type = "agentd"; } ];
      };
    };
    watcher = {
      intervalSecs = 30;
      actions = [ "restart" "notify" ];
    };
    check = {
      timeoutSecs = 10;
      retries = 0;
    };
    httpCheck = {
      expectStatus = 200;
    };
    # Commands the agent can specify run behind the boundary (osmoda-sandbox), as this user
    # unless a check asks for another (`root` only for a command that needs root).
    commandCheck = {
      user = "nobody";
    };
    routines = {
      enable = true;
      socket = "/run/osmoda/routines.sock";
      # Run history kept in the routines state dir.
      historyDays = 30;
      # The gateway's token alone, for prompt actions (the systemd credential `gateway-token`).
      gatewayTokenFile = null;
    };
    # Routines present on every machine (services.osmoda.routines.<name>; disable one with
    # `<name>.enable = false`). HEARTBEAT.md cadences: a health snapshot every 5 minutes,
    # failed units every 15, an hourly error-log scan, the morning briefing at 08:00 UTC (with
    # the gateway on, a turn of the agent: `morningBriefingPrompt` below).
    heartbeatRoutines = {
      health-snapshot = {
        trigger = { type = "interval"; seconds = 300; };
        action = { type = "http"; method = "GET"; path = "/health"; };
      };
      failed-units = {
        trigger = { type = "interval"; seconds = 900; };
        action = {
          type = "command";
          command = [ "systemctl" "list-units" "--state=failed" "--no-legend" "--plain" ];
        };
      };
      log-scan = {
        trigger = { type = "interval"; seconds = 3600; };
        action = {
          type = "command";
          command = [ "journalctl" "--priority=err" "--since=-1h" "--no-pager" "--quiet" ];
        };
      };
      morning-briefing = {
        trigger = { type = "cron"; schedule = "0 8 * * *"; };
        action = { type = "http"; method = "GET"; path = "/health"; };
      };
    };
    # The morning briefing is a turn of the agent when there is one: with the gateway on, the
    # morning-briefing routine's default action (the health call above, all a machine without
    # the gateway can run) is rendered as this prompt. An action the operator set stays theirs.
    morningBriefingPrompt = {
      type = "prompt";
      message = "Morning briefing: follow the morning-briefing skill and send the owner the briefing.";
      timeoutSecs = 600;
    };
    routine = {
      enable = true;
      missed = "skip";
      jitterSecs = 0;
      concurrency = "skip";
    };
    cronTrigger = {
      timezone = "UTC";
    };
    webhookTrigger = {
      replayWindowSecs = 300;
    };
    commandAction = {
      timeoutSecs = 300;
      outputLimitBytes = 65536;
    };
    httpAction = {
      timeoutSecs = 30;
    };
    promptAction = {
      timeoutSecs = 300;
    };
    keyd = {
      enable = true;
      socket = "/run/osmoda/keyd.sock";
      secretFile = null;
      # Most wallets keyd holds (osmoda-config's DEFAULT_MAX_WALLETS).
      maxWallets = 1000;
      # Default-deny: no chain is allowed until the operator lists it.
      policy = { chains = { }; wallets = { }; };
    };
    chainPolicy = {
      chainIds = [ ];
    };
    mesh = {
      enable = false;
      socket = "/run/osmoda/mesh.sock";
      listen = "0.0.0.0:18800";
      openFirewall = false;
      peers = { };
    };
    egress = {
      enable = true;
      socket = "/run/osmoda/egress.sock";
      listen = "127.0.0.1:19999";
      capabilities = { };
      # agentd publishes its capability public key and revoked token ids here.
      publicKeyFile = "/var/lib/osmoda/capability/public.key";
      revocationFile = "/var/lib/osmoda/capability/revoked";
      allowRanges = [ ];
      nameservers = [ ];
      limits = {
        headerTimeoutSecs = 10;
        connectTimeoutSecs = 10;
        idleTimeoutSecs = 300;
        maxTunnels = 4096;
        ratePerMinute = 600;
      };
    };
    capability = {
      ports = [ 443 ];
    };
    voice = {
      enable = false;
      socket = "/run/osmoda/voice.sock";
      whisperModel = null;
      piperModel = null;
      language = "en";
      audioDirs = [ ];
      pipewireRuntimeDir = "/run/pipewire";
      pipewireUser = null;
      source = null;
      gatewayTokenFile = null;
      memoryMax = "1536M";
    };
    gateway = {
      # Off by default: it needs an OpenClaw package and model credentials.
      enable = false;
      port = 18789;
      relaySocket = "/run/osmoda-relay/relay.sock";
      environmentFile = null;
      channels = {
        telegram = { enable = false; botTokenFile = null; allowFrom = [ ]; };
        whatsapp = { enable = false; allowFrom = [ ]; };
      };
    };
  };

  # A health check: snake_case keys, common defaults, http's expect_status default.
  renderCheck = c:
    let
      type = get c "type" null;
      typeDefaults = defaults.check
        // (if type == "http" then defaults.httpCheck else { })
        // (if type == "command" then defaults.commandCheck else { });
    in
    snakeKeys (typeDefaults // dropNulls c);

  renderWatcher = w:
    extra w [ "check" "intervalSecs" "actions" ]
    // (if w ? check && w.check != null then { check = renderCheck w.check; } else { })
    // {
      interval_secs = get w "intervalSecs" defaults.watcher.intervalSecs;
      actions = get w "actions" defaults.watcher.actions;
    };

  renderTrigger = t:
    let
      type = get t "type" null;
      typeDefaults = if type == "cron" then defaults.cronTrigger
        else if type == "webhook" then defaults.webhookTrigger else { };
    in
    snakeKeys (typeDefaults // dropNulls t);

  # `env` holds variable names: its keys are not snake_cased. A chain's steps are actions.
  renderAction = a:
    let
      type = get a "type" null;
      typeDefaults = if type == "command" then defaults.commandAction
        else if type == "http" then defaults.httpAction
        else if type == "prompt" then defaults.promptAction else { };
      rest = removeAttrs a [ "env" "steps" ];
    in
    snakeKeys (typeDefaults // dropNulls rest)
    // opt "env" a "env"
    // (if a ? steps && a.steps != null then { steps = map renderAction a.steps; } else { });

  renderRoutine = r:
    extra r [ "enable" "trigger" "action" "missed" "jitterSecs" "concurrency" ]
    // {
      enable = get r "enable" defaults.routine.enable;
      missed = get r "missed" defaults.routine.missed;
      jitter_secs = get r "jitterSecs" defaults.routine.jitterSecs;
      concurrency = get r "concurrency" defaults.routine.concurrency;
    }
    // (if r ? trigger && r.trigger != null then { trigger = renderTrigger r.trigger; } else { })
    // (if r ? action && r.action != null then { action = renderAction r.action; } else { });

  # Options under services.osmoda.routines that are the daemon's own, not routines.
  routinesKeys = serviceKeys ++ [ "historyDays" "gatewayTokenFile" ];

  # services.osmoda.routines.<name>: user routines sit beside enable/package/socket; the
  # HEARTBEAT defaults are merged per routine (a user attribute replaces a default one).
  routineSet = rc: gatewayOn:
    let
      user = removeAttrs rc routinesKeys;
      base = defaults.heartbeatRoutines;
      briefing = r:
        if gatewayOn && dropNulls (r.action or { }) == base.morning-briefing.action
        then r // { action = defaults.morningBriefingPrompt; } else r;
    in
    mapAttrs (n: _: (if n == "morning-briefing" then briefing else (r: r)) ((base.${n} or { }) // (user.${n} or { }))) (base // user);

  renderToken = t:
    extra t [ "perTxMax" "dailyLimit" "approvalThreshold" ]
    // optAmount "per_tx_max" t "perTxMax"
    // optAmount "daily_limit" t "dailyLimit"
    // optAmount "approval_threshold" t "approvalThreshold";

  renderTypedData = t:
    extra t [ "chainId" "verifyingContract" "primaryTypes" ]
    // opt "chain_id" t "chainId"
    // opt "verifying_contract" t "verifyingContract"
    // opt "primary_types" t "primaryTypes";

  renderChain = ch:
    extra ch [ "chainIds" "perTxMax" "dailyLimit" "approvalThreshold" "recipientAllowlist" "tokens" "typedData" ]
    // { chain_ids = get ch "chainIds" defaults.chainPolicy.chainIds; }
    // { tokens = mapAttrs (_: renderToken) (get ch "tokens" { }); }
    // { typed_data = map renderTypedData (get ch "typedData" [ ]); }
    // optAmount "per_tx_max" ch "perTxMax"
    // optAmount "daily_limit" ch "dailyLimit"
    // optAmount "approval_threshold" ch "approvalThreshold"
    // opt "recipient_allowlist" ch "recipientAllowlist";

  renderWallet = w:
    extra w [ "dailyLimit" "recipientAllowlist" ]
    // optAmount "daily_limit" w "dailyLimit"
    // opt "recipient_allowlist" w "recipientAllowlist";

  renderPeerKeys = k:
    extra k [ "ed25519" "x25519" "mlKem768" ]
    // opt "ed25519" k "ed25519" // opt "x25519" k "x25519" // opt "ml_kem_768" k "mlKem768";

  renderPeer = p:
    extra p [ "endpoint" "publicKeys" ]
    // opt "endpoint" p "endpoint"
    // (if p ? publicKeys && p.publicKeys != null then { public_keys = renderPeerKeys p.publicKeys; } else { });

  renderCapability = c:
    extra c [ "domains" "ports" "readOnlyPaths" "writablePaths" ]
    // opt "domains" c "domains"
    // {
      ports = get c "ports" defaults.capability.ports;
      read_only_paths = get c "readOnlyPaths" [ ];
      writable_paths = get c "writablePaths" [ ];
    };

  section = cfg: name: get cfg name { };

  render = cfg:
    let
      d = defaults;
      agentd = section cfg "agentd";
      memory = section cfg "memory";
      watch = section cfg "watch";
      safeSwitch = get watch "safeSwitch" { };
      routines = section cfg "routines";
      keyd = section cfg "keyd";
      policy = get keyd "policy" { };
      mesh = section cfg "mesh";
      egress = section cfg "egress";
      voice = section cfg "voice";
      # What no command a check or routine runs may see: the approval socket's directory,
      # agentd's state and keyd's secrets (DESIGN.md §1).
      maskedPaths = [
        (dirOf (get agentd "approvalSocket" d.agentd.approvalSocket))
        "${get cfg "stateDir" d.stateDir}/agentd"
        "${get cfg "stateDir" d.stateDir}/keyd"
      ];
      # Where agentd reaches a sibling daemon, or null when it is disabled.
      endpoint = name: attr:
        let s = section cfg name; in
        if get s "enable" d.${name}.enable then get s attr d.${name}.${attr} else null;
    in
    {
      agentd =
        extra agentd (serviceKeys ++ [ "approvalSocket" "approvalTtlSecs" "criticalPackages" "validate" "ledger" "backup" "writableRoots" "capabilityKeyFile" "agentctlPackage" ])
        // {
          files.writable_roots = get agentd "writableRoots" d.agentd.writableRoots;
          ledger = let
            l = section agentd "ledger";
            c = section l "checkpoint";
            dc = d.agentd.ledger.checkpoint;
            w = section l "witness";
            dw = d.agentd.ledger.witness;
          in extra l [ "checkpoint" "witness" ] // {
            witness = extra w [ "peers" "logs" "keyFile" ]
              // opt "key_file" w "keyFile"
              // {
                peers = get w "peers" dw.peers;
                logs = get w "logs" dw.logs;
              };
            checkpoint = extra c [ "enable" "everyEvents" "intervalSecs" "keyFile" ]
              // opt "key_file" c "keyFile"
              // {
                enable = get c "enable" dc.enable;
                every_events = get c "everyEvents" dc.everyEvents;
                interval_secs = get c "intervalSecs" dc.intervalSecs;
              };
          };
          # Backups archive agentd's state, the tree, and the state dirs of the enabled daemons
          # and the memory dir (restores write them back).
          backup = let
            b = section agentd "backup";
            stateDir = get cfg "stateDir" d.stateDir;
            enabled = name: get (section cfg name) "enable" d.${name}.enable;
          in extra b [ "dir" "keep" ] // {
            dir = get b "dir" "${stateDir}/backups";
            # null (keep every archive) is a value here, not "absent".
            keep = if b ? keep then b.keep else d.agentd.backup.keep;
            sources = listToAttrs (map (name: { inherit name; value = "${stateDir}/${name}"; })
              (filter enabled [ "watch" "routines" "keyd" "mesh" "voice" ]))
              // { memory = "${stateDir}/memory"; };
          };
          approval = {
            required = get cfg "approvalRequired" d.approvalRequired;
            ttl_secs = get agentd "approvalTtlSecs" d.agentd.approvalTtlSecs;
            critical_packages = get agentd "criticalPackages" d.agentd.criticalPackages;
          };
          memory = extra memory [ "embeddingEndpoint" "embeddingModel" "maxInjectedTokens" "relevanceThresholds" "llamaCpp" ]
            // opt "embedding_endpoint" memory "embeddingEndpoint"
            // {
              embedding_model = get memory "embeddingModel" d.memory.embeddingModel;
              max_injected_tokens = get memory "maxInjectedTokens" d.memory.maxInjectedTokens;
              relevance_thresholds = get memory "relevanceThresholds" d.memory.relevanceThresholds;
            };
          daemons = dropNulls {
            watch = endpoint "watch" "socket";
            routines = endpoint "routines" "socket";
            keyd = endpoint "keyd" "socket";
            mesh = endpoint "mesh" "socket";
            voice = endpoint "voice" "socket";
            egress = endpoint "egress" "listen";
          };
        };

      watch =
        extra watch (serviceKeys ++ [ "watchers" "safeSwitch" ])
        // {
          boundary.masked_paths = maskedPaths;
          watchers = mapAttrs (_: renderWatcher) (get watch "watchers" { });
          safe_switch = extra safeSwitch [ "ttlSecs" "healthChecks" ] // {
            ttl_secs = get safeSwitch "ttlSecs" d.watch.safeSwitch.ttlSecs;
            health_checks = map renderCheck (get safeSwitch "healthChecks" d.watch.safeSwitch.healthChecks);
          };
        };

      routines = {
        routines = mapAttrs (_: renderRoutine)
          (routineSet routines (get (section cfg "gateway") "enable" d.gateway.enable));
        # Command actions run behind the same boundary as osmoda-watch's checks.
        boundary.masked_paths = maskedPaths;
        history_days = get routines "historyDays" d.routines.historyDays;
        # The module's defaults: `/routine/remove` cannot remove them (unsetting an override
        # brings the default back), it says to disable them.
        default_routines = attrNames defaults.heartbeatRoutines;
      }
      # A ring1 routine names egress capabilities; agentd mints their tokens from egress.json
      # and binds their paths, which osmoda-routines checks against every secret it knows.
      // (let
          caps = get egress "capabilities" { };
          names = attrNames caps;
          binds = n: get caps.${n} "readOnlyPaths" [ ] ++ get caps.${n} "writablePaths" [ ];
          paths = listToAttrs (filter (x: x.value != [ ])
            (map (n: { name = n; value = binds n; }) names));
        in
        if get egress "enable" d.egress.enable && names != [ ]
        then { egress_capabilities = names; }
          // (if paths == { } then { } else { capability_paths = paths; })
        else { })
      # Other daemons' secret files, by option: no routine's sandbox may bind them.
      // (let
          ledger = section agentd "ledger";
          gw = section cfg "gateway";
          files = dropNulls {
            "agentd.capabilityKeyFile" = get agentd "capabilityKeyFile" null;
            "agentd.ledger.checkpoint.keyFile" = get (section ledger "checkpoint") "keyFile" null;
            "agentd.ledger.witness.keyFile" = get (section ledger "witness") "keyFile" null;
            "keyd.secretFile" = get keyd "secretFile" null;
            "mesh.secretFile" = get mesh "secretFile" null;
            "voice.gatewayTokenFile" = get voice "gatewayTokenFile" null;
            "routines.gatewayTokenFile" = get routines "gatewayTokenFile" null;
            "gateway.environmentFile" = get gw "environmentFile" null;
            "gateway.channels.telegram.botTokenFile" =
              get (section (section gw "channels") "telegram") "botTokenFile" null;
          };
        in
        if files == { } then { } else { daemon_secrets = files; })
      # Prompt actions reach the OpenClaw gateway on loopback (its token: the environment).
      // (let gw = section cfg "gateway"; in
        if get gw "enable" d.gateway.enable
        then { gateway_url = "http://127.0.0.1:${toString (get gw "port" d.gateway.port)}"; }
        else { });

      keyd =
        extra keyd (serviceKeys ++ [ "secretFile" "maxWallets" "policy" ])
        // opt "secret_file" keyd "secretFile"
        // {
          max_wallets = get keyd "maxWallets" d.keyd.maxWallets;
          policy = extra policy [ "chains" "wallets" ] // {
            chains = mapAttrs (_: renderChain) (get policy "chains" d.keyd.policy.chains);
            wallets = mapAttrs (_: renderWallet) (get policy "wallets" d.keyd.policy.wallets);
          };
        };

      # secretFile reaches mesh as the systemd credential `secret` (the module), never mesh.json.
      mesh =
        extra mesh (serviceKeys ++ [ "listen" "openFirewall" "peers" "secretFile" ])
        // {
          listen = get mesh "listen" d.mesh.listen;
          peers = mapAttrs (_: renderPeer) (get mesh "peers" { });
        };

      egress =
        let
          limits = get egress "limits" { };
          limit = key: name: { ${key} = get limits name d.egress.limits.${name}; };
        in
        extra egress (serviceKeys ++ [ "listen" "proxySocket" "capabilities" "publicKeyFile" "revocationFile" "allowRanges" "nameservers" "limits" ])
        // {
          listen = get egress "listen" d.egress.listen;
          capabilities = mapAttrs (_: renderCapability) (get egress "capabilities" { });
          public_key_file = get egress "publicKeyFile" d.egress.publicKeyFile;
          revocation_file = get egress "revocationFile" d.egress.revocationFile;
          allow_ranges = get egress "allowRanges" d.egress.allowRanges;
          nameservers = get egress "nameservers" d.egress.nameservers;
          limits =
            extra limits [ "headerTimeoutSecs" "connectTimeoutSecs" "idleTimeoutSecs" "maxTunnels" "ratePerMinute" ]
            // limit "header_timeout_secs" "headerTimeoutSecs"
            // limit "connect_timeout_secs" "connectTimeoutSecs"
            // limit "idle_timeout_secs" "idleTimeoutSecs"
            // limit "max_tunnels" "maxTunnels"
            // limit "rate_per_minute" "ratePerMinute";
        };

      voice =
        extra voice (serviceKeys ++ [ "whisperModel" "piperModel" "language" "audioDirs" "pipewireRuntimeDir" "pipewireUser" "source" "gatewayTokenFile" "memoryMax" ])
        // opt "whisper_model" voice "whisperModel"
        // opt "piper_model" voice "piperModel"
        // {
          language = get voice "language" d.voice.language;
          audio_dirs = get voice "audioDirs" d.voice.audioDirs;
        }
        # What /voice/listen hears goes to the gateway. The voice unit has no network: the module
        # forwards this socket beside its own to the gateway's loopback port.
        // (let gw = section cfg "gateway"; in
          if get gw "enable" d.gateway.enable
          then { gateway_url = "unix:${voiceGatewaySocket (get voice "socket" d.voice.socket)}"; }
          else { });
    };

  # OpenClaw's own config file (openclaw.json): the osmoda bridge plugin loaded with the
  # sockets of the daemons it has tools for (its configSchema refuses any other key), token
  # auth (the token comes from OPENCLAW_GATEWAY_TOKEN in the EnvironmentFile), an allowlist of
  # tools without OpenClaw's built-in host exec/process (the bridge's shell_exec runs inside
  # osModa's boundary), tool schemas given to the model directly, and the chat channels.
  # Secrets stay in files named here (tokenFile) or in the EnvironmentFile; none is copied in.
  renderGateway = cfg: { bridgePath }:
    let
      d = defaults;
      gw = section cfg "gateway";
      channels = get gw "channels" { };
      tg = d.gateway.channels.telegram // dropNulls (get channels "telegram" { });
      wa = d.gateway.channels.whatsapp // dropNulls (get channels "whatsapp" { });
      sock = name: get (section cfg name) "socket" d.${name}.socket;
      routinesOn = get (section cfg "routines") "enable" d.routines.enable;
      voiceOn = get (section cfg "voice") "enable" d.voice.enable;
    in
    {
      gateway = {
        mode = "local";
        bind = "loopback";
        port = get gw "port" d.gateway.port;
        auth.mode = "token";
      }
      # osmoda-routines' prompt actions and osmoda-voice's utterances start agent turns through
      # the OpenAI-compatible endpoint (token auth, loopback only, like the rest of the gateway).
      // (if routinesOn || voiceOn then { http.endpoints.chatCompletions.enabled = true; } else { });
      # What the model may call: the loaded plugins' tools (the bridge; memory-core's
      # memory_search/memory_get) and the built-in file tools, which the bridge fences off the
      # configuration tree and records. Nothing else: no host exec/process/terminal/nodes (they
      # would run outside osModa's boundary, unaudited, with the gateway's rights; shell_exec runs
      # inside it) and no gateway/plugins/openclaw (OpenClaw's own configuration is rendered here
      # from services.osmoda.gateway). The deny list repeats the dangerous ones, so a person who
      # widens `allow` does not get them by accident; the bridge also blocks them in a hook.
      tools = {
        allow = [ "group:plugins" "group:fs" "group:memory" ];
        deny = [ "group:runtime" "group:nodes" "terminal" "portal" "mobile_ui" "automations" "gateway" "plugins" "openclaw" ];
        toolSearch = false;
      };
      plugins = {
        # memory-core is OpenClaw's own memory (the memory slot): without it here the gateway
        # loads it but hides its memory_search/memory_get from the model, and with them the
        # bridge's corpus of osModa's notes (bridge/test/memory-corpus.test.ts, a full turn).
        allow = [ "osmoda-bridge" "memory-core" ];
        load.paths = [ bridgePath ];
        entries.osmoda-bridge = {
          enabled = true;
          config = {
            agentdSocket = sock "agentd";
            watchSocket = sock "watch";
            keydSocket = sock "keyd";
            routinesSocket = sock "routines";
            voiceSocket = sock "voice";
            meshSocket = sock "mesh";
            relaySocket = get gw "relaySocket" d.gateway.relaySocket;
            configTree = get cfg "configTree" d.configTree;
            # agentd's --memory-dir (modules/osmoda.nix): memory_get reads osModa's notes only there.
            memoryDir = "${get cfg "stateDir" d.stateDir}/memory";
          };
        };
      };
      channels =
        (if tg.enable then {
          telegram = {
            enabled = true;
            dmPolicy = "allowlist";
            allowFrom = tg.allowFrom;
          } // opt "tokenFile" tg "botTokenFile";
        } else { })
        // (if wa.enable then {
          whatsapp = { dmPolicy = "allowlist"; allowFrom = wa.allowFrom; };
        } else { });
    };

  knownTop = [ "enable" "stateDir" "configTree" "configTreeTemplate" "configRevision" "approvalRequired" "memory" "gateway" ]
    ++ daemonNames;

  # Settings the local backend (an etc-directory swap, no NixOS) cannot apply.
  unsupported = cfg:
    let
      p = "services.osmoda.";
      setIn = set: name: set ? ${name} && set.${name} != null;
      perDaemon = builtins.concatMap
        (dn:
          let s = section cfg dn; in
          map (k: "${p}${dn}.${k}")
            (filter (k: setIn s k) ([ "package" "socket" "enable" ]
              ++ (if dn == "agentd" then [ "approvalSocket" "validate" "capabilityKeyFile" ] else [ ])
              ++ (if dn == "egress" then [ "proxySocket" ] else [ ])
              ++ (if dn == "mesh" then [ "openFirewall" ] else [ ])
              ++ (if dn == "voice" then [ "pipewireRuntimeDir" "pipewireUser" "source" "gatewayTokenFile" "memoryMax" ] else [ ]))))
        daemonNames;
      top = map (k: p + k) (filter (k: setIn cfg k) [ "stateDir" "configTree" "configTreeTemplate" "configRevision" "gateway" ]);
      disabled = if get cfg "enable" true == false then [ "${p}enable" ] else [ ];
      unknown = map (k: p + k) (filter (k: !(elem k knownTop)) (attrNames cfg));
    in
    disabled ++ top ++ perDaemon ++ unknown;
in
{
  inherit defaults render renderGateway unsupported toSnake daemonNames voiceGatewaySocket;
}
