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
  inherit (builtins.fromJSON (builtins.readFile args)) roots idents protected skip nixpkgs;
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
  };
  lib0 = if nixpkgs then (import <nixpkgs/lib>) else minimalLib;

  # Anything a module reads that the tree alone cannot tell: every identifier of the files
  # throws (catchable), so a value that depends on it becomes "undecidable".
  thrower = prefix: listToAttrs (map (i: { name = i; value = throw "osmoda-gate: ${prefix}.${i}"; }) idents);
  lib = thrower "lib" // lib0;
  # Packages are derivation-shaped stubs named by their attribute path (`pkgs.openssh` → openssh).
  pkg = name: listToAttrs (map (i: { name = i; value = pkg "${name}.${i}"; }) idents) // {
    type = "derivation";
    __osmodaPkg = name;
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta = { };
    __functor = self: _: self;
  };
  pkgs = (listToAttrs (map (i: { name = i; value = pkg i; }) idents)) // { inherit lib; };
  config = thrower "config";
  given = { inherit lib pkgs config; options = thrower "options"; modulesPath = "/osmoda-gate/modules"; };
  argsFor = f: mapAttrs (n: _: if hasAttr n given then getAttr n given else throw "osmoda-gate: argument ${n}") (functionArgs f);

  rootStr = toString root;
  inTree = p: isPath p && substring 0 (stringLength rootStr + 1) (toString p) == rootStr + "/";
  rel = p: substring (stringLength rootStr + 1) (-1) (toString p);

  apply = m: if isFunction m then m (argsFor m) else m;
  # A module's definitions: the `config` of the full form, else the whole set.
  definitions = r: if r ? config || r ? options then (r.config or { }) else removeAttrs r [ "imports" "_file" "key" "disabledModules" "meta" "freeformType" ];

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
    in
    if builtins.elem k skip || builtins.length key > 40 then undecidable
    else builtins.trace "osmoda-gate:${k}" (
      if !t.success then undecidable
      else if isAttrs x then
        (if x ? __osmodaPkg then { __osmoda = "pkg"; name = x.__osmodaPkg; }
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

  module = f: m:
    let r = builtins.trace "osmoda-gate:${builtins.toJSON [ f ]}" (tryEval (apply m)); in
    if builtins.elem (builtins.toJSON [ f ]) skip || !r.success then { ok = false; imports = [ ]; roots = [ ]; }
    else let defs = definitions r.value; imps = tryEval (r.value.imports or [ ]); in {
      ok = true;
      imports = if imps.success && isList imps.value then imps.value else [ ];
      roots = map (p: let s = pick defs p; in { path = s.path; value = walk ([ f ] ++ s.path) s.value; }) protected;
    };

  # `imports = [ ./dir ]` means ./dir/default.nix.
  file = p: if builtins.pathExists (toString p + "/default.nix") then p + "/default.nix" else p;
  # Each module is evaluated once: the closure's items carry their result.
  item = key: path: { inherit key; m = module key (import path); };
  closure = builtins.genericClosure {
    startSet = map (f: item f (root + "/${f}")) roots;
    operator = it:
      map (p: item (rel (file p)) (file p))
        (filter (p: let t = tryEval (inTree p && builtins.pathExists p); in t.success && t.value) it.m.imports);
  };
in
map (it: { file = it.key; inherit (it.m) ok roots; }) closure
