# Renders the option declarations of `options.services.osmoda` (as the real module system
# evaluated them) to the JSON schema agentd checks edits against (`options.json` beside this
# file; `crates/osmoda-config/src/options.rs` reads it). Run by the test `option_schema.rs`,
# which regenerates `options.json` with OSMODA_UPDATE_GOLDEN=1 and fails when it is stale.
#
#   { lib, options }: options = the evaluated `options.services.osmoda`.
#
# A node is { option = TYPE; } or { set = { NAME = NODE; ... }; }. A TYPE is { kind = ...; }
# with kind one of bool, str, int (min/max), float, enum (values), strMatching (pattern),
# path, package, json, nullOr/listOf/attrsOf (elem), either (left/right), submodule (options,
# freeform), or `unknown` (name), which the checker refuses to guess about.
{ lib, options }:
let
  bounds =
    t:
    let
      m = builtins.match ".*between (-?[0-9]+) and (-?[0-9]+).*" t.description;
    in
    if m != null then
      {
        min = lib.toInt (builtins.elemAt m 0);
        max = lib.toInt (builtins.elemAt m 1);
      }
    else if t.name == "unsignedInt" then
      { min = 0; }
    else if t.name == "positiveInt" then
      { min = 1; }
    else
      { };

  ints = [ "int" "intBetween" "unsignedInt" "positiveInt" ];

  renderType =
    t:
    let
      n = t.name;
    in
    # Before nullOr: the serializable JSON type is a recursive `nullOr (oneOf …)`.
    if t.description or "" == "JSON value" then
      { kind = "json"; }
    else if n == "bool" || n == "str" || n == "path" || n == "package" || n == "float" then
      { kind = n; }
    else if builtins.elem n ints || builtins.match "(un)?signedInt[0-9]+" n != null then
      { kind = "int"; } // bounds t
    else if n == "enum" then
      {
        kind = "enum";
        inherit (t.functor.payload) values;
      }
    else if lib.hasPrefix "strMatching" n then
      {
        kind = "strMatching";
        inherit (t.functor.payload) pattern;
      }
    else if n == "nullOr" || n == "listOf" || n == "attrsOf" then
      {
        kind = n;
        elem = renderType t.nestedTypes.elemType;
      }
    else if n == "either" then
      {
        kind = "either";
        left = renderType t.nestedTypes.left;
        right = renderType t.nestedTypes.right;
      }
    else if n == "submodule" then
      {
        kind = "submodule";
        options = renderSet (removeAttrs (t.getSubOptions [ ]) [ "_module" "_freeformOptions" ]);
      }
      // lib.optionalAttrs (t.nestedTypes ? freeformType) {
        freeform = renderType t.nestedTypes.freeformType;
      }
    else
      {
        kind = "unknown";
        name = n;
      };

  renderNode =
    v:
    if lib.isOption v then
      { option = renderType v.type; }
    else
      { set = renderSet v; };

  renderSet = s: lib.mapAttrs (_: renderNode) (lib.filterAttrs (_: v: builtins.isAttrs v) s);
in
renderSet options
