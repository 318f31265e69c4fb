# The gate's evaluator: evaluates the NixOS modules of a configuration tree (the given roots and
# every module they import inside the tree) with stub arguments and returns, per module, the
# values under the protected roots, each leaf forced separately under `builtins.tryEval`.
#
# Run by agentd with `--option restrict-eval true`, so nothing outside the tree copy (and
# nixpkgs, when one resolves) can be read. Module wrappers (`mkForce`, `mkIf`, `mkMerge`, ...)
# are kept as `{ __osmoda = "override" | "if" | "merge"; ... }` for agentd to resolve; a value
# that cannot be decided is `{ __osmoda = "undecidable"; }`.
{ root, args }:
let
  inherit (builtins.fromJSON (builtins.readFile args)) roots idents protected skip nixpkgs nonce files;
  inherit (builtins) tryEval isAttrs isList isFunction isPath listToAttrs map filter
    functionArgs mapAttrs hasAttr getAttr attrNames concatMap substring stringLength;

  # The minimal `lib` where nixpkgs' is absent: nixpkgs' shapes for the module wrappers.
  minimalLib = rec {
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkOptionDefault = mkOverride 1500;
    mkDefault = mkOverride 1000;
    mkImageMediaOverride = mkOverride 60;
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOrder = priority: content: { _type = "order"; inherit priority content; };
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    mkEnableOption = name: { _type = "option"; };
    mkOption = o: { _type = "option"; };
    # nixpkgs' string helpers a module uses to read a file of the tree (`splitString "\n"
    # (readFile ./alice.keys)`), with nixpkgs' definitions.
    hasPrefix = pref: str: substring 0 (stringLength pref) str == pref;
    hasSuffix = suffix: content: let lc = stringLength content; ls = stringLength suffix; in
      lc >= ls && substring (lc - ls) lc content == suffix;
    removePrefix = prefix: str: let n = stringLength prefix; in
      if hasPrefix prefix str then substring n (stringLength str - n) str else str;
    removeSuffix = suffix: str: let sl = stringLength suffix; l = stringLength str; in
      if sl <= l && substring (l - sl) sl str == suffix then substring 0 (l - sl) str else str;
    splitString = sep: s: let
        chars = [ "\\" "[" "{" "(" ")" "^" "$" "?" "*" "+" "|" "." ];
        re = builtins.replaceStrings chars (map (c: "\\" + c) chars) (toString sep);
      in filter builtins.isString (builtins.split re (toString s));
    fileContents = file: removeSuffix "\n" (treeRead file);
    concatStringsSep = builtins.concatStringsSep;
    strings = { inherit hasPrefix hasSuffix removePrefix removeSuffix splitString fileContents concatStringsSep; };
    # Activation script entries (nixpkgs' lib/strings-with-deps.nix).
    noDepEntry = text: { inherit text; deps = [ ]; };
    fullDepEntry = text: deps: { inherit text deps; };
    stringAfter = deps: text: { inherit text deps; };
  };
  # nixpkgs' `lib` is read with the same guarded builtins as the modules (it has helpers such as
  # `maybeEnv` and `pathExists` that would otherwise tell the gate's evaluator from the real one).
  libDir = toString <nixpkgs/lib>;
  inLib = p: nixpkgs && isPath p && substring 0 (stringLength libDir + 1) (toString p) == libDir + "/";
  lib0 = if nixpkgs then scopedImport (scope { }) (<nixpkgs/lib> + "/default.nix") else minimalLib;

  rootStr = toString root;
  inTree = p: isPath p && substring 0 (stringLength rootStr + 1) (toString p) == rootStr + "/";
  rel = p: substring (stringLength rootStr + 1) (-1) (toString p);
  # `readFile` of a file of the tree reads it as the real build would (the same bytes, from the
  # unmodified copy beside the tree) and announces it, so agentd knows which module's values it
  # feeds: rewriting the file is then a change of those values. Anything else is refused.
  isTreeFile = p: (isPath p || builtins.isString p) && (let s = toString p; in
    substring 0 (stringLength rootStr + 1) s == rootStr + "/"
    && builtins.elem (substring (stringLength rootStr + 1) (-1) s) files);
  treeRead = p: if isStandIn p || !isTreeFile p then refuse "readFile"
    else let r = substring (stringLength rootStr + 1) (-1) (toString p); in
      builtins.trace "osmoda-gate-read:${r}" (builtins.readFile (dirOf root + "/raw/${r}"));
  # A path as agentd reports it: relative to the tree (whose private copy moves) where inside.
  shown = p: let s = toString p; in
    if substring 0 (stringLength rootStr + 1) s == rootStr + "/" then "./" + rel p else s;

  # Stand-ins for what the tree alone cannot tell (pkgs, config, options, the evaluator's
  # environment). A protected value is decided only when it does not depend on them: each module
  # is evaluated in two worlds, and agentd keeps a value only where both agree (a package leaf is
  # taken from the stand-in world, as the package named by its attribute path).
  # - "stand-in": package stubs named by their attribute path, `config`/`options` throwing.
  # - "bare": every selection from `pkgs`, `config` and `options` throws, and `builtins` answers
  #   to every identifier of the files, so a value that inspects a stand-in or asks whether the
  #   evaluator has a builtin comes out differently (or not at all) and is undecidable.
  # In both worlds the modules see guarded builtins: what reads the evaluator's environment or
  # the file system (getEnv, currentSystem, pathExists, readDir, readFile outside the tree,
  # nixVersion, fetchers, ...) or observes a failure (tryEval) throws, and reflection on a stand-in (attrNames pkgs,
  # hasAttr, typeOf, toJSON, ...) throws, so such a value is undecidable too.
  isStandIn = x: isAttrs x && x ? __osmodaStandIn;
  standIn = { __osmodaStandIn = nonce; };
  thrower = prefix: listToAttrs (map (i: { name = i; value = throw "osmoda-gate: ${prefix}.${i}"; }) idents) // standIn;
  refuse = what: throw "osmoda-gate: ${what} depends on the evaluator's environment";
  impure = [ "getEnv" "currentSystem" "currentTime" "nixVersion" "langVersion" "storeDir" "nixPath"
    "findFile" "pathExists" "readDir" "readFileType" "path" "filterSource" "fetchGit"
    "fetchMercurial" "fetchTarball" "fetchTree" "fetchurl" "fetchClosure" "storePath" "tryEval"
    "unsafeGetAttrPos" "functionArgs" "hashFile" "toFile" "derivation" "derivationStrict"
    "placeholder" "getContext" "hasContext" "appendContext" "unsafeDiscardStringContext"
    "unsafeDiscardOutputDependency" "addErrorContext" "getFlake" "outputOf" "abort" ];
  # Reflection that would tell a stand-in from the real thing: refused on stand-ins only.
  onStandIn1 = [ "attrNames" "attrValues" "typeOf" "isFunction" "toJSON" "toXML" "toString"
    "deepSeq" "seq" "length" ];
  onStandIn2 = [ "hasAttr" "getAttr" "mapAttrs" "intersectAttrs" "catAttrs" "removeAttrs" "zipAttrsWith" ];
  guard1 = n: f: x: if isStandIn x then refuse "${n} of a stand-in" else f x;
  guard2 = n: f: a: b: if isStandIn a || isStandIn b then refuse "${n} of a stand-in" else f a b;
  guardedBuiltins = extra: (builtins.mapAttrs (n: f:
    if builtins.elem n impure then (if isFunction f then (_: refuse n) else refuse n)
    else if builtins.elem n onStandIn1 then guard1 n f
    else if builtins.elem n onStandIn2 then guard2 n f
    else f) builtins) // {
      # A module's trace must not look like the gate's own announcements.
      trace = _: x: x;
      abort = msg: throw "osmoda-gate: abort";
      readFile = treeRead;
      import = guardedImport extra;
      scopedImport = attrs: p: scopedImport (scope extra // removeAttrs attrs [ "builtins" ]) p;
    } // extra;
  # `e ? path` and `e.path or d`, as agentd rewrites them in the tree's files (gate/guard.rs):
  # Nix's answer for ordinary sets; for a stand-in there is no answer that holds for the real
  # thing (it answers to every name of the files, and to no other), so the value is undecidable.
  step = what: v: n:
    if isStandIn v then refuse "${what} on a stand-in"
    else if !builtins.isString n then throw "osmoda-gate: attribute name is not a string"
    else if isAttrs v && hasAttr n v then { ok = true; value = getAttr n v; }
    else { ok = false; };
  hasPath = v: path: path == [ ] || (let s = step "?" v (builtins.head path); in s.ok && hasPath s.value (builtins.tail path));
  selectOr = v: path: d: if path == [ ] then v
    else let s = step "or" v (builtins.head path); in if s.ok then selectOr s.value (builtins.tail path) d else d;
  # What a module file sees at top level: the guarded builtins, also under `__name` and the
  # global names (`import`, `toString`, `derivation`, ...), and the attribute tests.
  scope = extra: let g = guardedBuiltins extra; in
    listToAttrs (map (n: { name = "__" + n; value = g.${n}; }) (attrNames builtins))
    // { builtins = g; inherit (g) abort baseNameOf derivation derivationStrict dirOf fetchGit
      fetchMercurial fetchTarball fetchTree fromTOML import isNull map placeholder removeAttrs
      scopedImport throw toString; }
    // { "__osmodaHas${nonce}" = hasPath; "__osmodaOr${nonce}" = selectOr; };
  # Files of the tree are imported with the same scope; anything else is undecidable (the
  # evaluator runs with restrict-eval, so it could not be read anyway).
  guardedImport = extra: p: if inTree p || inLib p then scopedImport (scope extra) p
    else if isStandIn p then refuse "import of a stand-in"
    else throw "osmoda-gate: import of ${toString p} (outside the tree)";

  # Anything a module reads that the tree alone cannot tell: every identifier of the files
  # throws (catchable), so a value that depends on it becomes "undecidable".
  lib = thrower "lib" // lib0;
  # Packages are derivation-shaped stubs named by their attribute path (`pkgs.openssh` → openssh).
  pkg = name: listToAttrs (map (i: { name = i; value = pkg "${name}.${i}"; }) idents) // standIn // {
    type = "derivation";
    __osmodaPkg = name;
    inherit name;
    pname = name;
    outPath = "/nix/store/${nonce}-${name}";
    meta = { };
    __functor = self: _: self;
  };
  worlds = {
    stand-in = {
      pkgs = (listToAttrs (map (i: { name = i; value = pkg i; }) idents)) // { inherit lib; } // standIn;
      config = thrower "config";
      options = thrower "options";
      extra = { };
    };
    bare = {
      pkgs = thrower "pkgs" // { inherit lib; __osmodaBare = true; };
      config = thrower "config" // { __osmodaBare = true; };
      options = thrower "options" // { __osmodaBare = true; };
      extra = builtins.removeAttrs (listToAttrs (map (i: { name = i; value = throw "osmoda-gate: builtins.${i}"; }) idents)) (attrNames builtins);
    };
  };
  given = w: { inherit lib; inherit (w) pkgs config options; modulesPath = "/osmoda-gate/modules"; };
  argsFor = w: f: mapAttrs (n: _: if hasAttr n (given w) then getAttr n (given w) else throw "osmoda-gate: argument ${n}") (functionArgs f);

  apply = w: m: if isFunction m then m (argsFor w m) else m;
  # A module's definitions: the `config` of the full form, else the whole set (less what the
  # module system reads itself, as its `unifyModuleSyntax` does).
  full = r: r ? config || r ? options;
  definitions = r: if full r then (r.config or { }) else removeAttrs r [ "imports" "require" "_file" "_class" "key" "disabledModules" "meta" "freeformType" ];

  undecidable = { __osmoda = "undecidable"; };
  # `key` names the value (file and attribute path). Each value is announced on stderr before it
  # is forced: the few errors `tryEval` cannot catch (restricted paths, type errors) abort the
  # evaluation, and agentd reruns it with the last announced key in `skip`.
  walk = key: v:
    let
      k = builtins.toJSON key;
      t = tryEval v;
      x = t.value;
      sub = n: walk (key ++ [ n ]);
      # Only the gate's own stubs are packages by name (a module cannot forge one: the nonce).
      isStub = x ? __osmodaPkg && (let s = tryEval (x.__osmodaStandIn or null); in s.success && s.value == nonce);
    in
    if builtins.elem k skip || builtins.length key > 40 then undecidable
    else builtins.trace "osmoda-gate:${k}" (
      if !t.success then undecidable
      else if isAttrs x then
        (if isStub then { __osmoda = "pkg"; name = x.__osmodaPkg; }
        else if x ? _type then
          (if x._type == "override" then { __osmoda = "override"; priority = sub "#priority" x.priority; content = sub "#content" x.content; }
          else if x._type == "if" then { __osmoda = "if"; condition = sub "#condition" x.condition; content = sub "#content" x.content; }
          else if x._type == "merge" then { __osmoda = "merge"; contents = sub "#contents" x.contents; }
          else if x._type == "order" then sub "#content" x.content
          else undecidable)
        else if x ? outPath then
          (let n = tryEval (x.pname or x.name); in if n.success then { __osmoda = "pkg"; name = n.value; } else undecidable)
        else mapAttrs (n: sub n) x)
      else if isList x then builtins.genList (i: sub "#${toString i}" (builtins.elemAt x i)) (builtins.length x)
      else if isFunction x then { __osmoda = "function"; }
      else if isPath x then { __osmoda = "path"; path = if inTree x then rel x else toString x; }
      else x);

  # Only the protected roots are walked, so a failure elsewhere in a module cannot hide them.
  # A root below a wrapper (`services = mkIf c { ... }`) is walked from the wrapper.
  pick = defs: path:
    let go = d: done: rest:
      if rest == [ ] then { path = done; value = d; }
      else if (let t = tryEval d; in t.success && isAttrs t.value && t.value ? _type) then { path = done; value = d; }
      else let t = tryEval d; in
        if !t.success then { path = done; value = undecidable; }
        else if isAttrs t.value && hasAttr (builtins.head rest) t.value then go (getAttr (builtins.head rest) t.value) (done ++ [ (builtins.head rest) ]) (builtins.tail rest)
        else { path = done ++ rest; value = null; };
    in go defs [ ] path;

  # One entry of `imports`, classified: a file of the tree (followed), an inline module (an
  # attribute set or a function, evaluated as a module of its own), or anything else — a path
  # outside the tree or missing, a string, a value that cannot be decided — which the gate cannot
  # read: agentd judges a change of those entries undecidable.
  entry = v:
    let t = tryEval v; x = t.value; p = tryEval (isPath x && inTree x && builtins.pathExists x); in
    if !t.success then { foreign = undecidable; }
    else if isPath x then (if p.success && p.value then { file = x; } else { foreign = { __osmoda = "path"; path = shown x; }; })
    else if isAttrs x || isFunction x then { inline = x; }
    else if builtins.isString x then { foreign = x; }
    else { foreign = undecidable; };
  # The short form's `require` is an old name of `imports`. A module's `key` decides which
  # modules NixOS keeps (one per key: an inline `{ key = toString ./ssh.nix; }` hides
  # ./ssh.nix), which the gate does not follow: it is an entry the gate cannot read.
  entries = r:
    let
      imps = tryEval ((r.imports or [ ]) ++ (if full r then [ ] else r.require or [ ]));
      key = tryEval (if r ? key then [ (keyEntry r.key) ] else [ ]);
    in
    (if !imps.success || !isList imps.value then [ { foreign = undecidable; } ] else map entry imps.value)
    ++ (if key.success then key.value else [ { foreign = undecidable; } ]);
  keyEntry = k: let s = tryEval (toString k); in
    if !s.success then { foreign = undecidable; }
    else { foreign = { __osmoda = "key"; key = if substring 0 (stringLength rootStr + 1) s.value == rootStr + "/" then "./" + substring (stringLength rootStr + 1) (-1) s.value else s.value; }; };
  # What the two worlds must agree on for a module's imports to be decided.
  shape = e: if e ? file then toString e.file else if e ? inline then "#inline" else builtins.toJSON e.foreign;

  # One module in world `w` (`key` is prefixed with the world, so `skip` names one world's value).
  module = w: f: m:
    let
      k = builtins.toJSON [ w f ];
      r = builtins.trace "osmoda-gate:${k}" (tryEval (apply worlds.${w} m));
    in
    if builtins.elem k skip || !r.success then { ok = false; imports = [ ]; inline = [ ]; foreign = [ ]; shape = [ ]; roots = [ ]; disabled = [ ]; }
    else let defs = definitions r.value; es = entries r.value; in {
      ok = true;
      imports = map (e: e.file) (filter (e: e ? file) es);
      inline = map (e: e.inline) (filter (e: e ? inline) es);
      foreign = map (e: e.foreign) (filter (e: e ? foreign) es);
      shape = map shape es;
      roots = map (p: let s = pick defs p; in { path = s.path; value = walk ([ w f ] ++ s.path) s.value; }) protected;
      # Modules this one turns off (`disabledModules`): agentd leaves them out of the effect.
      disabled = walk [ w f "#disabledModules" ] (r.value.disabledModules or [ ]);
    };

  # `imports = [ ./dir ]` means ./dir/default.nix.
  file = p: if builtins.pathExists (toString p + "/default.nix") then p + "/default.nix" else p;
  # Each module is evaluated once per world: the closure's items carry both results. A module
  # whose imports differ between the worlds chose them by a stand-in: its values are undecidable.
  load = w: path: module w (rel path) (scopedImport (scope worlds.${w}.extra) path);
  pair = key: a: b: {
    inherit key a;
    # Imports chosen by a stand-in: which modules are imported cannot be decided.
    b = if a.shape == b.shape then b else b // { ok = false; foreign = [ undecidable ]; };
  };
  item = path: pair (rel path) (load "stand-in" path) (load "bare" path);
  # The n-th inline module of `it` (`file.nix#imports.n`), evaluated in each world from that
  # world's own value of it.
  inlineKey = it: i: "${it.key}#imports.${toString i}";
  inlineItems = it: builtins.genList (i:
    let k = inlineKey it i; bi = it.b.inline; in
    pair k (module "stand-in" k (builtins.elemAt it.a.inline i))
      (if it.b.ok && builtins.length bi == builtins.length it.a.inline
       then module "bare" k (builtins.elemAt bi i)
       else { ok = false; imports = [ ]; inline = [ ]; foreign = [ ]; shape = [ ]; roots = [ ]; disabled = [ ]; }))
    (builtins.length it.a.inline);
  closure = builtins.genericClosure {
    startSet = map (f: item (root + "/${f}")) roots;
    operator = it: map (p: item (file p)) (it.a.imports ++ it.b.imports) ++ inlineItems it;
  };
in
map (it: {
  file = it.key;
  inherit (it.a) ok roots disabled foreign;
  imports = map (p: rel (file p)) (it.a.imports ++ it.b.imports)
    ++ builtins.genList (inlineKey it) (builtins.length it.a.inline);
  bare = { inherit (it.b) ok roots disabled foreign; };
}) closure
