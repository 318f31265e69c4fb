# Dead-option probe used by crates/osmoda-config/tests/nix_options.rs.
#
# For each option pattern (a path with "<name>" for attrsOf keys and "*" for list items),
# finds every instance of it in the fixture, changes that one value, re-renders every
# file lib produces (the seven daemon JSONs and OpenClaw's config) and reports whether the
# output changed for at least one instance. `exclude` lists names at "<name>" positions
# that are options themselves (enable/package/socket beside freeform routines).
{ repo, fixture, patternsJson }:
let
  inherit (builtins)
    any attrNames concatMap elemAt filter fromJSON genList head isAttrs isBool isInt isList
    isString length removeAttrs tail toJSON elem;
  L = import (repo + "/lib");
  fx = import fixture;
  out = c: toJSON (L.render c // { openclaw = L.renderGateway c { bridgePath = "/bridge"; }; });
  base = out fx;

  mutate = v:
    if isBool v then !v
    else if isInt v then v + 1
    else if isString v then v + "-mutated"
    else if isList v then (if v == [ ] then [ "mutated" ] else v ++ [ (head v) ])
    # An attrset option (a map of submodules, or free-form JSON): drop one entry.
    else if isAttrs v then (if v == { } then { mutated = true; } else removeAttrs v [ (head (attrNames v)) ])
    else "mutated";

  expand = pat: exclude: v:
    if pat == [ ] then [ [ ] ]
    else
      let h = head pat; t = tail pat; in
      if h == "<name>" then
        (if isAttrs v then
          concatMap (n: map (p: [ n ] ++ p) (expand t exclude v.${n}))
            (filter (n: !(elem n exclude)) (attrNames v))
        else [ ])
      else if h == "*" then
        (if isList v then
          concatMap (i: map (p: [ i ] ++ p) (expand t exclude (elemAt v i))) (genList (i: i) (length v))
        else [ ])
      else if isAttrs v && v ? ${h} then map (p: [ h ] ++ p) (expand t exclude v.${h})
      else [ ];

  update = path: f: v:
    if path == [ ] then f v
    else
      let h = head path; in
      if isInt h then genList (i: if i == h then update (tail path) f (elemAt v i) else elemAt v i) (length v)
      else v // { ${h} = update (tail path) f v.${h}; };

  probe = p:
    let inst = expand p.pattern p.exclude fx; in
    {
      instances = length inst;
      changed = any (path: out (update path mutate fx) != base) inst;
    };

  # Every leaf path the fixture sets (attrsets are walked, lists and scalars are leaves).
  leaves = prefix: v:
    if isAttrs v && v != { } then concatMap (n: leaves (prefix ++ [ n ]) v.${n}) (attrNames v)
    else [ prefix ];
in
{
  probes = map probe (fromJSON patternsJson);
  leaves = leaves [ ] fx;
}
