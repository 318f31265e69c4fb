// scripts/install.sh against temporary roots holding a copy of a typical /etc/nixos (channel
// and flake machines): the tree it creates starts with "imported from /etc/nixos", keeps the
// original files byte for byte, parses and evaluates (flake outputs with stand-ins for nixpkgs
// and osModa, osmoda.nix, configuration.nix's imports; no nixpkgs offline); osmoda.nix enables
// the gateway with a 0600 token file the script creates (an existing one is kept); files of the
// root are read inside it (NixOS's /etc/hostname -> /etc/static/... links); the mounted system
// gets the tree's system as its boot default through `nixos-install --flake` (a recording double:
// no NixOS here); a root that is not NixOS, a second run, a "no" answer and a flake it cannot
// edit are refused with nothing changed.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";

import { bridgeDir } from "./harness.ts";

const repoDir = resolve(bridgeDir, "..");
const script = join(repoDir, "scripts", "install.sh");
const fixtures = join(bridgeDir, "test", "fixtures", "install");

/**
 * `nixos-install` for the tests (no NixOS here): records its arguments in $FAKE_NIXOS_INSTALL_LOG
 * and exits with $FAKE_NIXOS_INSTALL_EXIT (0 by default).
 */
const doubles = mkdtempSync(join(tmpdir(), "osmoda-install-bin-"));
writeFileSync(join(doubles, "nixos-install"), `#!/bin/bash
printf '%s\\n' "$@" > "\${FAKE_NIXOS_INSTALL_LOG:-/dev/null}"
exit "\${FAKE_NIXOS_INSTALL_EXIT:-0}"
`);
chmodSync(join(doubles, "nixos-install"), 0o755);

/**
 * `nix` for the tests (no network here): only `nix flake lock`, which writes flake.lock in the
 * current directory as Nix does — a lock file already there keeps its nodes, inputs missing from
 * it are added (nixpkgs at the `--override-input nixpkgs URL` revision, else at a fixed
 * "newest" one) — and marks it intent-to-add in git, as Nix does in a git tree. Its arguments go
 * to $FAKE_NIX_LOG; $FAKE_NIX_LOCK_EXIT makes it fail as an offline lock does.
 * `nixos-version` prints $FAKE_NIXOS_REVISION (fails when it is unset). Both also sit alone in
 * `lockOnly`, for runs whose PATH has no other double.
 */
const newest = "1111111111111111111111111111111111111111";
const lockOnly = mkdtempSync(join(tmpdir(), "osmoda-install-lock-"));
for (const dir of [doubles, lockOnly]) {
  writeFileSync(join(dir, "nix"), `#!${process.execPath}
const fs = require("fs");
const args = process.argv.slice(2);
if (process.env.FAKE_NIX_LOG) fs.appendFileSync(process.env.FAKE_NIX_LOG, args.join(" ") + "\\n");
const f = args.indexOf("flake");
if (f < 0 || args[f + 1] !== "lock") { console.error("nix double: only 'nix flake lock'"); process.exit(2); }
if (process.env.FAKE_NIX_LOCK_EXIT) {
  console.error("error: unable to download 'https://api.github.com/repos/NixOS/nixpkgs/commits/nixos-24.05': Could not resolve host: api.github.com");
  process.exit(Number(process.env.FAKE_NIX_LOCK_EXIT));
}
const o = args.indexOf("--override-input");
const rev = o >= 0 && args[o + 1] === "nixpkgs" ? args[o + 2].split("/").pop() : "${newest}";
const lock = fs.existsSync("flake.lock") ? JSON.parse(fs.readFileSync("flake.lock", "utf8")) : { nodes: { root: { inputs: {} } }, root: "root", version: 7 };
const gh = (owner, repo, r) => ({ locked: { lastModified: 1, narHash: "sha256-AAAA", owner, repo, rev: r, type: "github" }, original: { owner, repo, type: "github" } });
if (!lock.nodes.nixpkgs) { lock.nodes.nixpkgs = gh("NixOS", "nixpkgs", rev); lock.nodes.root.inputs.nixpkgs = "nixpkgs"; }
lock.nodes.osmoda = { ...gh("osmoda", "osmoda", "2222222222222222222222222222222222222222"), inputs: { nixpkgs: ["nixpkgs"] } };
lock.nodes.root.inputs.osmoda = "osmoda";
fs.writeFileSync("flake.lock", JSON.stringify(lock, null, 2) + "\\n");
require("child_process").spawnSync("git", ["add", "--intent-to-add", "flake.lock"]);
`);
  writeFileSync(join(dir, "nixos-version"), `#!/bin/bash
[ "$1" = --revision ] && [ -n "\${FAKE_NIXOS_REVISION:-}" ] || exit 1
echo "$FAKE_NIXOS_REVISION"
`);
  chmodSync(join(dir, "nix"), 0o755);
  chmodSync(join(dir, "nixos-version"), 0o755);
}
process.on("exit", () => {
  rmSync(doubles, { recursive: true, force: true });
  rmSync(lockOnly, { recursive: true, force: true });
});

/** The nixpkgs revision the tree's committed flake.lock holds. */
function lockedNixpkgs(tree: string): string {
  return JSON.parse(git(tree, "show", "HEAD:flake.lock")).nodes.nixpkgs.locked.rev;
}

/**
 * The /etc of a NixOS system as it is on disk: hostname and os-release are links to
 * /etc/static/..., and /etc/static is an absolute link into the root's /nix/store.
 */
function staticEtc(root: string, hostname: string, osRelease: string) {
  const store = join(root, "nix", "store", "0123456789abcdfghijklmnpqrsvwxyz-etc", "etc");
  mkdirSync(store, { recursive: true });
  writeFileSync(join(store, "hostname"), hostname);
  writeFileSync(join(store, "os-release"), osRelease);
  for (const f of ["hostname", "os-release"]) rmSync(join(root, "etc", f), { force: true });
  symlinkSync("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-etc/etc", join(root, "etc", "static"));
  symlinkSync("/etc/static/hostname", join(root, "etc", "hostname"));
  symlinkSync("/etc/static/os-release", join(root, "etc", "os-release"));
}

/** A fresh root: /etc/NIXOS, os-release and hostname of a NixOS 24.05 machine, and /etc/nixos. */
function nixosRoot(opts: { flake?: string; nixos?: boolean } = {}): string {
  const root = mkdtempSync(join(tmpdir(), "osmoda-install-"));
  mkdirSync(join(root, "etc"));
  cpSync(join(fixtures, "etc-nixos"), join(root, "etc", "nixos"), { recursive: true });
  if (opts.flake !== undefined) writeFileSync(join(root, "etc", "nixos", "flake.nix"), opts.flake);
  if (opts.nixos === false) {
    writeFileSync(join(root, "etc", "os-release"), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n');
  } else {
    writeFileSync(join(root, "etc", "NIXOS"), "");
    writeFileSync(join(root, "etc", "os-release"), 'NAME=NixOS\nID=nixos\nVERSION_ID="24.05"\nPRETTY_NAME="NixOS 24.05 (Uakari)"\n');
  }
  writeFileSync(join(root, "etc", "hostname"), "web-1\n");
  return root;
}

function install(root: string, args: string[] = ["--yes"], input?: string, env: Record<string, string> = {}) {
  return spawnSync("bash", [script, "--root", root, ...args], { encoding: "utf8", input, env: { ...process.env, PATH: `${doubles}:${process.env.PATH}`, TMPDIR: tmpdir(), ...env } });
}

/** Every path under `dir` with its mode and content: equal snapshots mean nothing changed. */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      const st = lstatSync(p);
      out.push(`${relative(dir, p)} ${st.mode.toString(8)} ${e.isFile() ? readFileSync(p, "base64") : e.isSymbolicLink() ? readlinkSync(p) : ""}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.join("\n");
}

function git(tree: string, ...args: string[]): string {
  const r = spawnSync("git", ["-C", tree, ...args], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

function nixEval(expr: string): any {
  const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "-E", expr], { encoding: "utf8" });
  assert.equal(r.status, 0, `nix-instantiate: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The host's modules as names: a path → its file name, a string stand-in as is, else "inline". */
function hostModules(tree: string, host: string): { modules: string[]; inputs: any } {
  return nixEval(`let
      flake = import ${tree}/flake.nix;
      out = flake.outputs {
        self = { rev = "r"; outPath = ${tree}; };
        nixpkgs = { lib.nixosSystem = args: args; };
        osmoda = { nixosModules.default = "osmoda.nixosModules.default"; };
      };
      name = m: if builtins.isPath m then baseNameOf m else if builtins.isString m then m else "inline";
    in {
      modules = map name out.nixosConfigurations.${JSON.stringify(host)}.modules;
      inputs = builtins.mapAttrs (_: i: i.url or null) flake.inputs;
    }`);
}

function assertImported(root: string) {
  const tree = join(root, "var", "lib", "osmoda", "config");
  const etc = join(root, "etc", "nixos");
  const log = git(tree, "log", "--reverse", "--format=%s").trim().split("\n");
  assert.equal(log[0], "imported from /etc/nixos");
  assert.equal(log.length, 2);
  const first = git(tree, "rev-list", "--max-parents=0", "HEAD").trim();
  const originals = readdirSync(etc).sort();
  assert.deepEqual(git(tree, "ls-tree", "--name-only", first).trim().split("\n").sort(), originals, "the import holds exactly /etc/nixos");
  for (const f of ["configuration.nix", "hardware-configuration.nix"]) {
    const orig = readFileSync(join(etc, f), "utf8");
    assert.equal(git(tree, "show", `${first}:${f}`), orig, `${f} in the import`);
    assert.equal(readFileSync(join(tree, f), "utf8"), orig, `${f} unchanged at HEAD`);
  }
  // flake.lock is committed with osModa's change: no build writes it into the tree later.
  assert.deepEqual(git(tree, "show", "--name-only", "--format=", "HEAD").trim().split("\n").filter((f) => f === "flake.lock"), ["flake.lock"]);
  assert.equal(git(tree, "status", "--porcelain"), "", "the tree is clean");
  assert.equal(statSync(tree).mode & 0o777, 0o700);
  for (const f of readdirSync(tree).filter((f) => f.endsWith(".nix"))) {
    const p = spawnSync("nix-instantiate", ["--parse", join(tree, f)], { encoding: "utf8" });
    assert.equal(p.status, 0, `${f} does not parse: ${p.stderr}`);
  }
  assert.equal(nixEval(`((import ${tree}/osmoda.nix) { }).services.osmoda.enable`), true);
  // The agent is on: the gateway, with its environment file (the token) outside the store.
  assert.deepEqual(nixEval(`((import ${tree}/osmoda.nix) { }).services.osmoda.gateway`), { enable: true, environmentFile: "/var/lib/osmoda/gateway.env" });
  return tree;
}

/**
 * The tree's configuration.nix is still a NixOS module whose imports resolve inside the tree
 * (no nixpkgs here for a full evaluation; nixos-eval lacks options such as boot.loader.efi).
 */
function moduleImportsResolve(tree: string) {
  const got = nixEval(`let m = (import ${tree}/configuration.nix) { config = { }; lib = { }; pkgs = { }; modulesPath = /nowhere; };
    in map (p: { name = baseNameOf p; exists = builtins.pathExists p; inTree = builtins.dirOf p == ${tree}; }) m.imports`);
  assert.deepEqual(got, [{ name: "hardware-configuration.nix", exists: true, inTree: true }]);
}

describe("scripts/install.sh", () => {
  it("a channel machine: imported unchanged, a flake added around it, evaluates", () => {
    const root = nixosRoot();
    try {
      const etcBefore = snapshot(join(root, "etc"));
      const rev = "0123456789abcdef0123456789abcdef01234567";
      const log = join(doubles, `nix-${process.pid}`);
      const r = install(root, ["--yes"], undefined, { FAKE_NIXOS_REVISION: rev, FAKE_NIX_LOG: log });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /a channel NixOS configuration, host web-1/);
      // nixpkgs is locked at the revision the running system was built from.
      assert.deepEqual(readFileSync(log, "utf8").trim().split("\n"), [`--extra-experimental-features nix-command flakes flake lock --override-input nixpkgs github:NixOS/nixpkgs/${rev}`]);
      rmSync(log);
      assert.match(r.stdout, /lock {4}flake\.lock: nixpkgs at 0123456789ab, the revision this system runs\n/);
      assert.match(r.stdout, /imported from \/etc\/nixos/);
      const tree = assertImported(root);
      assert.equal(snapshot(join(root, "etc")), etcBefore, "/etc/nixos untouched");
      const { modules, inputs } = hostModules(tree, "web-1");
      assert.deepEqual(modules, ["osmoda.nixosModules.default", "configuration.nix", "osmoda.nix", "inline"]);
      assert.deepEqual(inputs, { nixpkgs: "github:NixOS/nixpkgs/nixos-24.05", osmoda: "github:osmoda/osmoda" });
      assert.equal(lockedNixpkgs(tree), rev);
      moduleImportsResolve(tree);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("a flake machine: osModa's input and module added to its flake, the rest unchanged", () => {
    const flake = readFileSync(join(fixtures, "flake.nix"), "utf8");
    const root = nixosRoot({ flake });
    try {
      const r = install(root);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /a flake NixOS configuration/);
      const tree = assertImported(root);
      assert.equal(git(tree, "show", "HEAD~1:flake.nix"), flake, "the flake as it was in the import");
      const { modules, inputs } = hostModules(tree, "web-1");
      assert.deepEqual(modules, ["osmoda.nixosModules.default", "osmoda.nix", "configuration.nix"]);
      assert.deepEqual(inputs, { nixpkgs: "github:NixOS/nixpkgs/nixos-unstable", osmoda: "github:osmoda/osmoda" });
      // The edit: two lines added to inputs, osmoda in the outputs argument, the modules list extended; nothing else.
      const diff = git(tree, "diff", "--unified=0", "HEAD~1", "HEAD", "--", "flake.nix");
      const changed = diff.split("\n").filter((l) => /^[-+][^-+]/.test(l));
      assert.deepEqual(changed, [
        '+    osmoda.url = "github:osmoda/osmoda";',
        '+    osmoda.inputs.nixpkgs.follows = "nixpkgs";',
        "-  outputs = inputs@{ self, nixpkgs, ... }: {",
        "+  outputs = inputs@{ self, osmoda, nixpkgs, ... }: {",
        "-      modules = [ ./configuration.nix ];",
        "+      modules = [ osmoda.nixosModules.default ./osmoda.nix ./configuration.nix ];",
      ]);
      moduleImportsResolve(tree);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  // Also the shape formatters write without spaces (`[./configuration.nix]`): its first module
  // must stay an element of its own, not be glued to the one inserted before it.
  for (const list of ["[ ./configuration.nix ]", "[./configuration.nix]"]) {
    it(`a flake with inputs.<name> lines and modules = ${list} is edited too`, () => {
      const flake = `{\n  description = "web";\n  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";\n  outputs = { self, nixpkgs }: {\n    nixosConfigurations.web-1 = nixpkgs.lib.nixosSystem {\n      system = "x86_64-linux";\n      modules = ${list};\n    };\n  };\n}\n`;
      const root = nixosRoot({ flake });
      try {
        const r = install(root);
        assert.equal(r.status, 0, r.stderr);
        const tree = assertImported(root);
        assert.deepEqual(hostModules(tree, "web-1").modules, ["osmoda.nixosModules.default", "osmoda.nix", "configuration.nix"]);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });
  }

  for (const [what, setup, message] of [
    ["a Debian root", (root: string) => root, /is not NixOS[\s\S]*never converts another distribution[\s\S]*Nothing was changed/],
  ] as const) {
    it(`refuses ${what} and changes nothing`, () => {
      const root = setup(nixosRoot({ nixos: false }));
      try {
        const before = snapshot(root);
        const r = install(root);
        assert.equal(r.status, 1);
        assert.match(r.stderr, message);
        assert.equal(snapshot(root), before);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });
  }

  it("refuses a second run, a 'no', a flake it cannot edit and a missing configuration, changing nothing", () => {
    const cases: { name: string; root: () => string; args?: string[]; input?: string; message: RegExp }[] = [
      { name: "second run", root: () => { const r = nixosRoot(); assert.equal(install(r).status, 0); return r; }, message: /already exists: osModa is installed/ },
      { name: "answer no", root: () => nixosRoot(), args: [], input: "n\n", message: /not installed \(answer was 'n'\)/ },
      { name: "no answer", root: () => nixosRoot(), args: [], input: "", message: /not installed/ },
      {
        name: "two hosts in one flake",
        root: () => nixosRoot({ flake: readFileSync(join(fixtures, "flake.nix"), "utf8").replace("  };\n}", "    nixosConfigurations.b = nixpkgs.lib.nixosSystem { modules = [ ./b.nix ]; };\n  };\n}") }),
        message: /not in a shape this script edits safely[\s\S]*Nothing was changed/,
      },
      { name: "no configuration", root: () => { const r = nixosRoot(); rmSync(join(r, "etc", "nixos"), { recursive: true }); mkdirSync(join(r, "etc", "nixos")); return r; }, message: /neither configuration.nix nor flake.nix/ },
    ];
    for (const c of cases) {
      const root = c.root();
      try {
        const before = snapshot(root);
        const r = install(root, c.args ?? ["--yes"], c.input);
        assert.equal(r.status, 1, `${c.name}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, c.message, c.name);
        assert.equal(snapshot(root), before, `${c.name}: something changed`);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }
  });

  it("installs after a 'y' on standard input, and leaves no temporary directory", () => {
    const root = nixosRoot();
    const tmp = mkdtempSync(join(tmpdir(), "osmoda-install-tmp-"));
    try {
      const r = spawnSync("bash", [script, "--root", root], { encoding: "utf8", input: "y\n", env: { ...process.env, PATH: `${doubles}:${process.env.PATH}`, TMPDIR: tmp } });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /Proceed\? \[y\/N\]/);
      assertImported(root);
      assert.deepEqual(readdirSync(tmp), []);
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("the gateway's token file: created 0600 with a new token, an existing one kept byte for byte", () => {
    const root = nixosRoot();
    const kept = nixosRoot();
    try {
      const r = install(root);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /create {2}\S+\/var\/lib\/osmoda\/gateway\.env \(0600: a new gateway token; add a model API key there\)/);
      const env = join(root, "var", "lib", "osmoda", "gateway.env");
      assert.equal(lstatSync(env).mode & 0o777, 0o600);
      assert.match(readFileSync(env, "utf8"), /^OPENCLAW_GATEWAY_TOKEN=[0-9a-f]{64}\n$/);
      // The token alone beside it (as the flake's hosts make it), named by the options of the
      // daemons that need only the token: the module's "gatewayTokenFile is not set" warning
      // has no cause on an installed machine.
      assert.match(r.stdout, /create {2}\S+\/var\/lib\/osmoda\/gateway-token \(0600: the token of \S+gateway\.env alone/);
      const token = join(root, "var", "lib", "osmoda", "gateway-token");
      assert.equal(lstatSync(token).mode & 0o777, 0o600);
      assert.equal(readFileSync(token, "utf8"), `${readFileSync(env, "utf8").replace(/^OPENCLAW_GATEWAY_TOKEN=/, "")}`);
      const tree = join(root, "var", "lib", "osmoda", "config");
      assert.deepEqual(
        nixEval(`let o = ((import ${tree}/osmoda.nix) { }).services.osmoda; in [ o.routines.gatewayTokenFile o.voice.gatewayTokenFile ]`),
        ["/var/lib/osmoda/gateway-token", "/var/lib/osmoda/gateway-token"],
      );
      assert.notEqual(readFileSync(env, "utf8"), (() => { const o = nixosRoot(); try { install(o); return readFileSync(join(o, "var", "lib", "osmoda", "gateway.env"), "utf8"); } finally { rmSync(o, { recursive: true, force: true }); } })(), "a new token each time");

      const keptEnv = join(kept, "var", "lib", "osmoda", "gateway.env");
      mkdirSync(dirname(keptEnv), { recursive: true });
      writeFileSync(keptEnv, "OPENCLAW_GATEWAY_TOKEN=mine\nANTHROPIC_API_KEY=sk-test\n", { mode: 0o640 });
      const k = install(kept);
      assert.equal(k.status, 0, k.stderr);
      assert.match(k.stdout, /keep {4}\S+gateway\.env \(exists/);
      assert.equal(readFileSync(keptEnv, "utf8"), "OPENCLAW_GATEWAY_TOKEN=mine\nANTHROPIC_API_KEY=sk-test\n");
      assert.equal(lstatSync(keptEnv).mode & 0o777, 0o640);
      // The token file is made from the kept file's token line, without its model key.
      const keptToken = join(dirname(keptEnv), "gateway-token");
      assert.equal(readFileSync(keptToken, "utf8"), "mine\n");
      assert.equal(lstatSync(keptToken).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(dirname(keptEnv)).sort(), ["config", "gateway-token", "gateway.env"], "no temporary file left");

      // An existing token file is kept byte for byte; a gateway.env without a token line makes
      // none and says so.
      rmSync(join(kept, "var", "lib", "osmoda", "config"), { recursive: true, force: true });
      rmSync(keptToken);
      writeFileSync(keptToken, "older\n", { mode: 0o640 });
      const k2 = install(kept);
      assert.equal(k2.status, 0, k2.stderr);
      assert.match(k2.stdout, /keep {4}\S+gateway-token \(exists/);
      assert.equal(readFileSync(keptToken, "utf8"), "older\n");
      assert.equal(lstatSync(keptToken).mode & 0o777, 0o640);
      rmSync(join(kept, "var", "lib", "osmoda", "config"), { recursive: true, force: true });
      rmSync(keptToken);
      writeFileSync(keptEnv, "ANTHROPIC_API_KEY=sk-test\n", { mode: 0o640 });
      const k3 = install(kept);
      assert.equal(k3.status, 0, k3.stderr);
      assert.match(k3.stderr, /has no OPENCLAW_GATEWAY_TOKEN line, so \S+gateway-token was not made/);
      assert.deepEqual(readdirSync(dirname(keptEnv)).sort(), ["config", "gateway.env"]);
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(kept, { recursive: true, force: true });
    }
  });

  it("--root reads the target's /etc/hostname and /etc/os-release through its own /etc/static links", () => {
    const root = nixosRoot();
    try {
      staticEtc(root, "web-2\n", 'NAME=NixOS\nID=nixos\nVERSION_ID="24.11"\n');
      rmSync(join(root, "etc", "NIXOS"));
      const r = install(root);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /a channel NixOS configuration, host web-2/);
      const tree = assertImported(root);
      const { modules, inputs } = hostModules(tree, "web-2");
      assert.deepEqual(modules, ["osmoda.nixosModules.default", "configuration.nix", "osmoda.nix", "inline"]);
      assert.equal(inputs.nixpkgs, "github:NixOS/nixpkgs/nixos-24.11");
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("--root refuses a link that leads nowhere inside the root, unless --host says the name", () => {
    const root = nixosRoot();
    try {
      rmSync(join(root, "etc", "hostname"));
      symlinkSync("/etc/static/hostname", join(root, "etc", "hostname"));
      // `..` and absolute links stay inside the root: this one must not reach the host's /etc.
      const before = snapshot(root);
      const r = install(root);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /etc\/hostname is a link that does not resolve inside .*\/etc\/static\/hostname, missing there\): pass --host NAME .*Nothing was changed/);
      assert.equal(snapshot(root), before);
      const h = install(root, ["--yes", "--host", "web-3"]);
      assert.equal(h.status, 0, h.stderr);
      hostModules(assertImported(root), "web-3");
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("--root installs the tree's system as the mounted system's boot default with nixos-install --flake", () => {
    const root = nixosRoot();
    const log = join(doubles, `calls-${process.pid}`);
    try {
      const r = install(root, ["--yes"], undefined, { FAKE_NIXOS_INSTALL_LOG: log });
      assert.equal(r.status, 0, r.stderr);
      const tree = assertImported(root);
      assert.match(r.stdout, /apply {3}nixos-install --root \S+ --flake git\+file:\/\/\S+\/var\/lib\/osmoda\/config#web-1: the system at \S+\n\s+boots osModa from its next boot/);
      assert.deepEqual(readFileSync(log, "utf8").split("\n").slice(0, -1), ["--root", root, "--flake", `git+file://${tree}#web-1`, "--no-root-passwd", "--no-channel-copy"]);
      assert.match(r.stdout, /osModa is installed in .*: its system is the boot default from .*config \([0-9a-f]+\)\. Reboot/);
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(log, { force: true });
    }
    // nixos-install fails, or is not there: exit 4, the tree stays, and the way on names the
    // tree's path on the booted machine, not under the mount point.
    for (const env of [{ FAKE_NIXOS_INSTALL_EXIT: "1" }, { PATH: `${lockOnly}:/usr/bin:/bin` }]) {
      const root = nixosRoot();
      try {
        const r = install(root, ["--yes"], undefined, env);
        assert.equal(r.status, 4, r.stdout + r.stderr);
        assert.ok(existsSync(join(root, "var", "lib", "osmoda", "config", ".git")));
        assert.match(r.stderr, /boot \S+'s system and run there: nixos-rebuild switch --flake \/var\/lib\/osmoda\/config#web-1/);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }
    // --no-switch: nothing installed, the command for later names the booted path.
    const root2 = nixosRoot();
    try {
      const r = install(root2, ["--yes", "--no-switch"], undefined, { FAKE_NIXOS_INSTALL_LOG: log });
      assert.equal(r.status, 0, r.stderr);
      assert.ok(!existsSync(log), "nixos-install not run");
      assert.match(r.stdout, /apply {3}nothing \(--no-switch\): later, on that machine, run\n\s+nixos-rebuild switch --flake \/var\/lib\/osmoda\/config#web-1\n/);
    } finally {
      rmSync(root2, { recursive: true, force: true });
    }
  });

  it("flake.lock: an existing lock keeps its inputs; without a revision to pin, nixpkgs is locked at its newest; a failed lock changes nothing", () => {
    const flake = readFileSync(join(fixtures, "flake.nix"), "utf8");
    const root = nixosRoot({ flake });
    const log = join(doubles, `nix-${process.pid}`);
    try {
      const mine = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
      const lock = { nodes: { nixpkgs: { locked: { owner: "NixOS", repo: "nixpkgs", rev: mine, type: "github" }, original: { owner: "NixOS", repo: "nixpkgs", type: "github" } }, root: { inputs: { nixpkgs: "nixpkgs" } } }, root: "root", version: 7 };
      writeFileSync(join(root, "etc", "nixos", "flake.lock"), JSON.stringify(lock, null, 2) + "\n");
      const r = install(root, ["--yes"], undefined, { FAKE_NIXOS_REVISION: "0123456789abcdef0123456789abcdef01234567", FAKE_NIX_LOG: log });
      assert.equal(r.status, 0, r.stderr);
      const tree = assertImported(root);
      // The person's lock is theirs: no override of nixpkgs, osModa's input added beside it.
      assert.deepEqual(readFileSync(log, "utf8").trim().split("\n"), ["--extra-experimental-features nix-command flakes flake lock"]);
      assert.equal(lockedNixpkgs(tree), mine);
      assert.deepEqual(Object.keys(JSON.parse(git(tree, "show", "HEAD:flake.lock")).nodes.root.inputs).sort(), ["nixpkgs", "osmoda"]);
      assert.match(r.stdout, /lock {4}flake\.lock: your inputs as they were locked \(nixpkgs at abcdefabcdef\), osModa added\n/);
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(log, { force: true });
    }
    const plain = nixosRoot();
    try {
      const r = install(plain);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(lockedNixpkgs(assertImported(plain)), newest);
      assert.match(r.stdout, /lock {4}flake\.lock: nixpkgs at 111111111111, its branch's newest \(nixos-version gave no revision to pin\)\n/);
    } finally {
      rmSync(plain, { recursive: true, force: true });
    }
    const offline = nixosRoot();
    try {
      const before = snapshot(offline);
      const r = install(offline, ["--yes"], undefined, { FAKE_NIX_LOCK_EXIT: "1" });
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /could not lock the flake's inputs \(nix flake lock; is the network up\?\):\n.*Could not resolve host[^]*Nothing was changed\.\n$/);
      assert.equal(snapshot(offline), before, "nothing changed");
    } finally {
      rmSync(offline, { recursive: true, force: true });
    }
  });

  it("usage errors exit 2", () => {
    assert.equal(spawnSync("bash", [script, "--bogus"], { encoding: "utf8" }).status, 2);
    assert.equal(spawnSync("bash", [script, "--ttl", "soon"], { encoding: "utf8" }).status, 2);
  });
});
