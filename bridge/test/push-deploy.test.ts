// scripts/push-deploy.sh. With a test double (a fake `ssh`, `nix` and `agentctl` on PATH that
// record their argv; the host's commands run through a real shell, so the quoting is tested):
// the order of the steps, the exact commands, the exit codes passed on, and the refusals that
// happen before anything reaches the host. And one real run: a real sshd on loopback (in a mount
// namespace whose /etc says NixOS) in front of real agentd + osmoda-watch (local backend): the
// commit is pushed into the host's tree, recorded by agentd as a generation, applied by
// SafeSwitch, and what it changed is rendered. Not run here: a build with nix (no nixpkgs) and
// a SafeSwitch of the nixos backend (no NixOS).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { Stack, bridgeDir, daemonBinDir, until } from "./harness.ts";

const repoDir = resolve(bridgeDir, "..");
const script = join(repoDir, "scripts", "push-deploy.sh");

function git(dir: string, ...args: string[]): string {
  const r = spawnSync("git", ["-C", dir, "-c", "user.name=t", "-c", "user.email=t@t", ...args], { encoding: "utf8" });
  assert.equal(r.status, 0, `git ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

/** A host tree ("there", a git repo) and a clone of it with one more commit ("here"). */
function trees(dir: string): { there: string; here: string; rev: string } {
  const there = join(dir, "there");
  cpSync(join(repoDir, "generations"), there, { recursive: true });
  git(there, "init", "-q", "-b", "main");
  git(there, "add", "-A");
  git(there, "commit", "-q", "-m", "imported");
  const here = join(dir, "here");
  const c = spawnSync("git", ["clone", "-q", there, here], { encoding: "utf8" });
  assert.equal(c.status, 0, c.stderr);
  const f = join(here, "osmoda.nix");
  writeFileSync(f, readFileSync(f, "utf8").replace("seconds = 300;", "seconds = 600;"));
  git(here, "commit", "-q", "-am", "disk usage every ten minutes");
  return { there, here, rev: git(here, "rev-parse", "HEAD") };
}

/**
 * PATH with recording doubles: `ssh` logs its argv, answers the probe with $FAKE_PROBE, passes
 * git-receive-pack on to the host tree $FAKE_TREE, and runs any other host command through bash
 * (where `agentctl` is the double: it logs its argv and exits with $FAKE_RESTORE_EXIT /
 * $FAKE_SWITCH_EXIT); `nix` logs and prints a store path.
 */
function doubles(dir: string): string {
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const log = `printf '%s\\0' "$(basename "$0")" "$@" >> "$FAKE_LOG"; printf '\\n' >> "$FAKE_LOG"`;
  writeFileSync(join(bin, "ssh"), `#!/bin/bash
${log}
while [ "$#" -gt 0 ]; do case $1 in -o|-i|-p) shift 2 ;; --) shift; break ;; -*) shift ;; *) shift; break ;; esac; done
[ "\${1:-}" = "--" ] && shift
cmd="$*"
case $cmd in
  "sh -c "*) echo "$FAKE_PROBE" ;;
  git-receive-pack*) exec git-receive-pack "$FAKE_TREE" ;;
  *) exec bash -c "$cmd" ;;
esac
`);
  writeFileSync(join(bin, "agentctl"), `#!/bin/bash
${log}
case $1 in
  config) echo "\${FAKE_RESTORE_OUT:-landed}"; exit "\${FAKE_RESTORE_EXIT:-0}" ;;
  switch) exit "\${FAKE_SWITCH_EXIT:-0}" ;;
esac
`);
  writeFileSync(join(bin, "nix"), `#!/bin/bash
${log}
[ "$1" = build ] && echo /nix/store/00000000000000000000000000000000-nixos-system-web-1
exit 0
`);
  for (const f of ["ssh", "agentctl", "nix"]) chmodSync(join(bin, f), 0o755);
  return bin;
}

/** The recorded calls: each an argv (program name first). */
function calls(logFile: string): string[][] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, "utf8").split("\0\n").filter(Boolean).map((l) => l.split("\0"));
}

describe("push-deploy.sh with recording doubles for ssh, nix and agentctl", () => {
  let dir = "";
  let t: { there: string; here: string; rev: string };
  let bin = "";
  const logFile = () => join(dir, "calls.log");
  function run(args: string[], env: Record<string, string> = {}) {
    rmSync(logFile(), { force: true });
    return spawnSync("bash", [script, ...args], {
      encoding: "utf8",
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, FAKE_LOG: logFile(), FAKE_TREE: t.there, FAKE_PROBE: "ok", ...env },
    });
  }
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "osmoda-push-"));
    t = trees(dir);
    bin = doubles(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const common = ["--flake", "", "--port", "2222", "--identity", "/k/id", "--ssh-option", "StrictHostKeyChecking=yes", "--yes"];
  const opts = () => common.map((a) => (a === "" ? t.here : a));

  it("builds here, copies the closure, pushes the commit, records it and switches there, in that order", () => {
    const r = run([...opts(), "--ttl", "60", "--check", '{"type":"tcp","host":"127.0.0.1","port":80}', "--reason", "ten minutes; it's enough", "root@web-1.example.org"]);
    assert.equal(r.status, 0, r.stderr);
    const c = calls(logFile());
    const sshArgs = ["-o", "StrictHostKeyChecking=yes", "-i", "/k/id", "-p", "2222", "root@web-1.example.org", "--"];
    assert.deepEqual(c.map((x) => x[0]), ["ssh", "nix", "nix", "ssh", "ssh", "agentctl", "ssh", "agentctl"]);
    assert.deepEqual(c[0]!.slice(1, -1), sshArgs);
    assert.deepEqual(c[1], ["nix", "build", "--no-link", "--print-out-paths", `${t.here}#nixosConfigurations.web-1.config.system.build.toplevel`]);
    assert.deepEqual(c[2], ["nix", "copy", "--to", "ssh://root@web-1.example.org", "/nix/store/00000000000000000000000000000000-nixos-system-web-1"]);
    // git's ssh: the same options, then git-receive-pack of the host's tree.
    assert.deepEqual(c[3]!.slice(1, 7), sshArgs.slice(0, 6));
    assert.match(c[3]!.at(-1)!, /^git-receive-pack '\/var\/lib\/osmoda\/config'$/);
    assert.equal(git(t.there, "rev-parse", `refs/osmoda/incoming/${t.rev}`), t.rev, "the commit is in the host's tree");
    assert.equal(git(t.there, "rev-parse", "main"), git(t.here, "rev-parse", "HEAD~1"), "its branch is left to agentd");
    // The host's shell got back exactly these words.
    assert.deepEqual(c[5]!.slice(0, 4), ["agentctl", "config", "restore", t.rev]);
    assert.equal(c[5]![4], "--reason");
    assert.match(c[5]![5]!, /^ten minutes; it's enough\n\nDeployed with scripts\/push-deploy\.sh from \S+ \(commit [0-9a-f]{40} of .*here\)\.$/);
    assert.equal(c[5]!.length, 6, "no --approval unless given");
    assert.deepEqual(c[7]!.slice(0, 5), ["agentctl", "switch", "begin", "--wait", "--reason"]);
    assert.match(c[7]![5]!, new RegExp(`^push-deploy of ${t.rev.slice(0, 12)} from \\S+: ten minutes; it's enough$`));
    assert.deepEqual(c[7]!.slice(6), ["--ttl", "60", "--check", '{"type":"tcp","host":"127.0.0.1","port":80}']);
    assert.match(r.stderr, /is live on root@web-1\.example\.org \(SafeSwitch committed\)/);
  });

  it("--build-on target builds nothing here; the commit's subject is the default reason; --approval reaches the restore", () => {
    const r = run([...opts(), "--build-on", "target", "--approval", "17", "--host", "web", "root@10.0.0.5"]);
    assert.equal(r.status, 0, r.stderr);
    const c = calls(logFile());
    assert.ok(!c.some((x) => x[0] === "nix"), "no nix here");
    const restore = c.find((x) => x[0] === "agentctl" && x[1] === "config")!;
    assert.match(restore[5]!, /^disk usage every ten minutes\n/);
    assert.deepEqual(restore.slice(6), ["--approval", "17"]);
  });

  it("passes the switch's outcome on: rolled back 3, failed 4, not finished 5", () => {
    for (const [code, said] of [["3", /rolled back to its previous system by itself/], ["4", /the switch failed/], ["5", /had not finished/]] as const) {
      const r = run([...opts(), "--build-on", "target", "root@web-1"], { FAKE_SWITCH_EXIT: code });
      assert.equal(String(r.status), code, r.stderr);
      assert.match(r.stderr, said);
    }
  });

  it("a change the host's gate holds: stops before the switch, naming what to do", () => {
    const r = run([...opts(), "--build-on", "target", "root@web-1"], {
      FAKE_RESTORE_EXIT: "1",
      FAKE_RESTORE_OUT: "error: approval required: disables service openssh\napprove: agentctl approvals approve 9",
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /approval gate needs a person.*--approval <ticket>\. Nothing was applied/);
    assert.ok(!calls(logFile()).some((x) => x[0] === "agentctl" && x[1] === "switch"), "no switch");
  });

  it("the host's tree already has it: applies anyway", () => {
    const r = run([...opts(), "--build-on", "target", "root@web-1"], { FAKE_RESTORE_EXIT: "1", FAKE_RESTORE_OUT: "error: nothing changed: the tree already equals it; no generation was recorded" });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(calls(logFile()).some((x) => x[0] === "agentctl" && x[1] === "switch"));
  });

  it("refuses a host that is not NixOS or runs no osModa, before building or pushing", () => {
    for (const [probe, said] of [["not-nixos", /is not NixOS/], ["no-agentd", /runs no osModa/], ["no-tree", /no git tree at/]] as const) {
      const before = git(t.there, "for-each-ref");
      const r = run([...opts(), "root@web-1"], { FAKE_PROBE: probe });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, said);
      assert.match(r.stderr, /Nothing was changed\./);
      assert.deepEqual(calls(logFile()).map((x) => x[0]), ["ssh"], "only the probe");
      assert.equal(git(t.there, "for-each-ref"), before);
    }
  });

  it("refuses bad input and a dirty tree without reaching the host; --dry-run reaches nothing", () => {
    writeFileSync(join(t.here, "osmoda.nix"), readFileSync(join(t.here, "osmoda.nix"), "utf8") + "\n");
    let r = run([...opts(), "root@web-1"]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /uncommitted changes: commit them/);
    git(t.here, "checkout", "--", "osmoda.nix");
    for (const [args, said] of [
      [["root@web-1", "--check", "tcp:80"], /--check takes one health check as JSON/],
      [["root@web-1", "--build-on", "cloud"], /--build-on is local or target/],
      [["root@web-1", "--ttl", "1m"], /--ttl takes whole seconds/],
      [["-oProxyCommand=x"], /unknown option/],
      [["root@web-1", "--tree", "relative"], /--tree must be an absolute path/],
      [["root@web-1", "other"], /one host only/],
      [[], /which host\?/],
    ] as const) {
      r = run([...opts(), ...args]);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, said);
    }
    r = run([...opts(), "--dry-run", "root@web-1"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /\+ nix build --no-link --print-out-paths .*#nixosConfigurations\.web-1\.config\.system\.build\.toplevel/);
    assert.match(r.stderr, /\+ ssh root@web-1 -- agentctl switch begin --wait/);
    assert.deepEqual(calls(logFile()), [], "a dry run calls nothing");
  });
});

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(port, "127.0.0.1");
    s.on("connect", () => (s.destroy(), res(true)));
    s.on("error", () => res(false));
  });
}

describe("push-deploy.sh for real: ssh to a loopback sshd in front of real agentd and osmoda-watch", { timeout: 300_000 }, () => {
  const root = process.getuid?.() === 0;
  const sshd = "/usr/sbin/sshd";
  const why = !root ? "not root (sshd and a mount namespace need it)" : !existsSync(sshd) ? "no sshd (apt-get install openssh-server)" : "";
  const stack = new Stack();
  let dir = "";
  let child: ChildProcess | undefined;
  let port = 0;
  before(async () => {
    if (why) return;
    dir = mkdtempSync(join(tmpdir(), "osmoda-push-real-"));
    await stack.startDaemons();
    await stack.agentd("POST", "/config/unset", { path: "services.osmoda.watch.watchers.sshd", reason: "no systemd in the test" });
    // The host's /etc says NixOS, in the sshd's own mount namespace only.
    const etc = join(dir, "etc");
    cpSync("/etc", etc, { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(etc, "NIXOS"), "");
    for (const k of ["host", "client"]) {
      const g = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, k)], { encoding: "utf8" });
      assert.equal(g.status, 0, g.stderr);
    }
    writeFileSync(join(dir, "authorized_keys"), readFileSync(join(dir, "client.pub")));
    port = await new Promise<number>((r) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => r(p));
      });
    });
    const bins = daemonBinDir();
    writeFileSync(join(dir, "sshd_config"), [
      `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${join(dir, "host")}`, `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`, "PermitRootLogin prohibit-password", "PasswordAuthentication no",
      "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
      `SetEnv PATH=${bins}:/usr/local/bin:/usr/bin:/bin OSMODA_AGENTD_SOCKET=${stack.agentdSocket} OSMODA_WATCH_SOCKET=${stack.watchSocket}`,
    ].join("\n") + "\n");
    child = spawn("unshare", ["-m", "--propagation", "private", "bash", "-c",
      `mount --bind ${etc} /etc && mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec ${sshd} -D -e -f ${join(dir, "sshd_config")}`],
      { stdio: ["ignore", "inherit", "inherit"] });
    await until("sshd on loopback", 20_000, async () => (child!.exitCode !== null ? assert.fail(`sshd exited ${child!.exitCode}`) : listening(port)));
  });
  after(async () => {
    if (child && child.exitCode === null) {
      const gone = new Promise((r) => child!.once("exit", r));
      child.kill("SIGTERM");
      await gone;
    }
    if (!why) await stack.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("deploys a commit of a clone of the host's tree: a generation there, applied by SafeSwitch", (t) => {
    if (why) {
      console.log(`skipped: push-deploy.sh real run: ${why}`);
      t.skip(why);
      return;
    }
    const here = join(dir, "here");
    assert.equal(spawnSync("git", ["clone", "-q", stack.tree, here]).status, 0);
    const f = join(here, "osmoda.nix");
    writeFileSync(f, readFileSync(f, "utf8").replace("seconds = 300;", "seconds = 600;"));
    git(here, "commit", "-q", "-am", "disk usage every ten minutes");
    const rev = git(here, "rev-parse", "HEAD");
    const before = stack.git("rev-parse", "HEAD");
    const deploy = () => spawnSync("bash", [script, "--flake", here, "--host", "test", "--build-on", "target", "--tree", stack.tree,
      "--port", String(port), "--identity", join(dir, "client"), "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", `UserKnownHostsFile=${join(dir, "known_hosts")}`,
      "--ttl", "1", "--check", '{"type":"agentd"}', "--yes", "root@127.0.0.1"], { encoding: "utf8", timeout: 240_000 });
    const r = deploy();
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    // Recorded by agentd as a new generation on the host's branch whose tree is the commit's.
    const head = stack.git("rev-parse", "HEAD");
    assert.notEqual(head, before);
    assert.equal(stack.git("rev-parse", "HEAD^"), before, "one generation on top of what was there");
    assert.equal(stack.git("rev-parse", "HEAD^{tree}"), git(here, "rev-parse", "HEAD^{tree}"));
    assert.match(stack.git("log", "-1", "--format=%B"), /disk usage every ten minutes[\s\S]*Deployed with scripts\/push-deploy\.sh[\s\S]*Osmoda-Event: /);
    assert.equal(stack.git("rev-parse", `refs/osmoda/incoming/${rev}`), rev);
    // Applied by the host's SafeSwitch: committed, and the new value rendered.
    assert.match(r.stderr, /is live on root@127\.0\.0\.1 \(SafeSwitch committed\)/);
    const routines = JSON.parse(readFileSync(join(stack.etc, "osmoda", "routines.json"), "utf8"));
    assert.equal(routines.routines["disk-usage"].trigger.seconds, 600);
    // Again: the host already has it; it is applied again, nothing new recorded.
    const again = deploy();
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /already has this configuration; applying it/);
    assert.equal(stack.git("rev-parse", "HEAD"), head);
  });
});
