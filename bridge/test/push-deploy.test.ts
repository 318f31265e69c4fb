// scripts/push-deploy.sh. With a test double (a fake `ssh`, `nix` and `agentctl` on PATH that
// record their argv; the host's commands run through a real shell, so the quoting is tested):
// the order of the steps, the exact commands, the exit codes passed on (and 6 when ssh or the
// wait breaks off after the switch began), the generation applied being the one recorded, the
// ssh options nix copy gets, and the refusals that happen before anything reaches the host.
// And real runs: a real sshd on loopback (in a mount namespace whose /etc says NixOS) in front of
// real agentd + osmoda-watch (local backend): the commit is pushed into the host's tree, recorded
// by agentd as a generation, applied by SafeSwitch, and what it changed is rendered; a commit the
// host's agent makes between the record and the switch is not what gets applied. Not run here:
// a build with nix (no nixpkgs) and a SafeSwitch of the nixos backend (no NixOS).
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
 * git-receive-pack on to the host tree $FAKE_TREE, dies like a dropped connection (255) on the
 * host command matching $FAKE_SSH_DROP, and runs any other host command through bash (where
 * `agentctl` is the double: it logs its argv; `config restore` prints $FAKE_RESTORE_OUT (a
 * recorded generation by default) and exits $FAKE_RESTORE_EXIT; `switch begin` accepts switch 7
 * (or exits $FAKE_BEGIN_EXIT); `switch status` exits $FAKE_SWITCH_EXIT); `nix` logs, writes the
 * NIX_SSHOPTS it got to $FAKE_LOG.nixsshopts and prints a store path.
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
if [ -n "\${FAKE_SSH_DROP:-}" ] && [[ $cmd == *"$FAKE_SSH_DROP"* ]]; then echo "Connection to host closed by remote host." >&2; exit 255; fi
case $cmd in
  "sh -c "*) echo "$FAKE_PROBE" ;;
  git-receive-pack*) exec git-receive-pack "$FAKE_TREE" ;;
  *) exec bash -c "$cmd" ;;
esac
`);
  writeFileSync(join(bin, "agentctl"), `#!/bin/bash
${log}
case "$1 $2" in
  "config restore") echo "\${FAKE_RESTORE_OUT:-generation 0123456789ab  disk usage every ten minutes}"; exit "\${FAKE_RESTORE_EXIT:-0}" ;;
  "switch begin") [ "\${FAKE_BEGIN_EXIT:-0}" = 0 ] || { echo "error: another switch is running" >&2; exit "$FAKE_BEGIN_EXIT"; }
    echo "switch 7 accepted; follow it with: agentctl switch status 7 --wait" >&2 ;;
  "switch status") exit "\${FAKE_SWITCH_EXIT:-0}" ;;
esac
`);
  writeFileSync(join(bin, "nix"), `#!/bin/bash
${log}
printf '%s' "\${NIX_SSHOPTS-<unset>}" > "$FAKE_LOG.nixsshopts"
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
    const r = run([...opts(), "--ttl", "60", "--check", '{"type":"tcp","host":"127.0.0.1","port":80}', "--reason", "ten minutes; it's enough", "root@web-1.example.org"], { NIX_SSHOPTS: "-o Compression=yes" });
    assert.equal(r.status, 0, r.stderr);
    const c = calls(logFile());
    const sshArgs = ["-o", "StrictHostKeyChecking=yes", "-i", "/k/id", "-p", "2222", "root@web-1.example.org", "--"];
    assert.deepEqual(c.map((x) => x[0]), ["ssh", "nix", "nix", "ssh", "ssh", "agentctl", "ssh", "agentctl", "ssh", "agentctl"]);
    // nix copy's ssh: the caller's NIX_SSHOPTS, then the same options as plain words (Nix splits them).
    assert.equal(readFileSync(`${logFile()}.nixsshopts`, "utf8"), "-o Compression=yes -o StrictHostKeyChecking=yes -i /k/id -p 2222");
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
    // The switch applies the generation the restore recorded, then is followed with a timeout.
    assert.deepEqual(c[7]!.slice(0, 4), ["agentctl", "switch", "begin", "--reason"]);
    assert.match(c[7]![4]!, new RegExp(`^push-deploy of ${t.rev.slice(0, 12)} from \\S+: ten minutes; it's enough$`));
    assert.deepEqual(c[7]!.slice(5), ["--ttl", "60", "--check", '{"type":"tcp","host":"127.0.0.1","port":80}', "--generation", "0123456789ab"]);
    assert.deepEqual(c[9], ["agentctl", "switch", "status", "7", "--wait", "--timeout", "3600"]);
    assert.match(r.stderr, /is live on root@web-1\.example\.org as generation 0123456789ab \(SafeSwitch 7 committed\)/);
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

  it("passes the switch's outcome on: rolled back 3, failed 4, not finished within --timeout 5", () => {
    for (const [code, said] of [["3", /rolled back to its previous system by itself/], ["4", /switch 7 failed/], ["5", /had not finished within 90s; it goes on there/]] as const) {
      const r = run([...opts(), "--build-on", "target", "--timeout", "90", "root@web-1"], { FAKE_SWITCH_EXIT: code });
      assert.equal(String(r.status), code, r.stderr);
      assert.match(r.stderr, said);
      assert.deepEqual(calls(logFile()).at(-1), ["agentctl", "switch", "status", "7", "--wait", "--timeout", "90"]);
    }
  });

  it("after the switch began, a wait that breaks off is 6 (not known), never 'nothing applied'", () => {
    // ssh drops while following the switch; osmoda-watch unreachable past agentctl's grace (1).
    for (const env of [{ FAKE_SSH_DROP: "switch status" }, { FAKE_SWITCH_EXIT: "1" }]) {
      const r = run([...opts(), "--build-on", "target", "root@web-1"], env);
      assert.equal(r.status, 6, r.stderr);
      assert.match(r.stderr, /switch 7 was started on root@web-1, but following it ended with (255|1) .*it may still commit or roll back there; follow it with agentctl switch status 7/);
      assert.doesNotMatch(r.stderr, /Nothing was applied|nothing applied/);
    }
    // ssh drops while the switch is being started: it may have begun.
    let r = run([...opts(), "--build-on", "target", "root@web-1"], { FAKE_SSH_DROP: "switch begin" });
    assert.equal(r.status, 6, r.stderr);
    assert.match(r.stderr, /may have started, but how is not known here \(ssh exit 255\): follow it there with agentctl switch history/);
    // osmoda-watch refuses to begin: nothing applied (1), and no wait.
    r = run([...opts(), "--build-on", "target", "root@web-1"], { FAKE_BEGIN_EXIT: "1" });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /osmoda-watch refused the switch \(above\): \S+ is recorded there as generation 0123456789ab, not applied/);
    assert.ok(!calls(logFile()).some((x) => x[0] === "agentctl" && x[2] === "status"), "no wait");
  });

  it("nix copy cannot carry ssh options with whitespace or quotes: refused with --build-on local, passed as words with --build-on target", () => {
    for (const extra of [["--identity", "/keys/my key"], ["--ssh-option", "ProxyCommand=ssh -W %h:%p jump"], ["--ssh-option", "User='root'"]]) {
      const r = run([...opts(), ...extra, "root@web-1"]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /NIX_SSHOPTS, which cannot carry .*put it in ~\/\.ssh\/config \(Host root@web-1\), or use --build-on target/);
      assert.deepEqual(calls(logFile()), [], "nothing ran");
    }
    const r = run([...opts(), "--identity", "/keys/my key", "--build-on", "target", "root@web-1"]);
    assert.equal(r.status, 0, r.stderr);
    const probe = calls(logFile())[0]!;
    assert.deepEqual(probe.slice(probe.indexOf("-i"), probe.indexOf("-i") + 4), ["-i", "/keys/my key", "-p", "2222"]);
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

  it("the host's tree already has it: applies the host's HEAD with that tree; if its HEAD moved on, nothing", () => {
    const nothing = { FAKE_RESTORE_EXIT: "1", FAKE_RESTORE_OUT: "error: nothing changed: the tree already equals it; no generation was recorded" };
    // The host's HEAD has another tree: refused, no switch.
    let r = run([...opts(), "--build-on", "target", "--tree", t.there, "root@web-1"], nothing);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /tree moved on while deploying .*Nothing was applied/);
    assert.ok(!calls(logFile()).some((x) => x[0] === "agentctl" && x[1] === "switch"));
    // The host's HEAD is a commit of its own with the pushed commit's tree: that commit is applied.
    const main = git(t.there, "rev-parse", "main");
    try {
      const same = git(t.there, "commit-tree", `${t.rev}^{tree}`, "-p", "main", "-m", "the same configuration, recorded there");
      git(t.there, "update-ref", "refs/heads/main", same);
      r = run([...opts(), "--build-on", "target", "--tree", t.there, "root@web-1"], nothing);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /already has this configuration \(generation [0-9a-f]{12}\); applying it/);
      const begin = calls(logFile()).find((x) => x[0] === "agentctl" && x[2] === "begin")!;
      assert.deepEqual(begin.slice(-2), ["--generation", same]);
    } finally {
      git(t.there, "update-ref", "refs/heads/main", main);
    }
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
      [["root@web-1", "--timeout", "1h"], /--timeout takes whole seconds/],
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
    assert.match(r.stderr, /\+ ssh root@web-1 -- agentctl switch begin --reason .* --generation <the generation recorded>/);
    assert.match(r.stderr, /\+ ssh root@web-1 -- agentctl switch status <its id> --wait --timeout 3600/);
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
    // The host's agentctl, first on the login's PATH: when $dir/interloper exists, `switch begin`
    // is preceded by a commit of the host's own agent (what push-deploy must not apply).
    mkdirSync(join(dir, "wrap"));
    writeFileSync(join(dir, "wrap", "agentctl"), `#!/bin/bash
if [ "$1 $2" = "switch begin" ] && [ -e ${join(dir, "interloper")} ]; then
  rm -f ${join(dir, "interloper")}
  ${join(bins, "agentctl")} config set services.osmoda.routines.disk-usage.trigger.seconds 900 --reason "the host's agent: disk usage every fifteen minutes" >&2 || exit 1
fi
exec ${join(bins, "agentctl")} "$@"
`);
    chmodSync(join(dir, "wrap", "agentctl"), 0o755);
    writeFileSync(join(dir, "sshd_config"), [
      `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${join(dir, "host")}`, `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`, "PermitRootLogin prohibit-password", "PasswordAuthentication no",
      "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
      `SetEnv PATH=${join(dir, "wrap")}:${bins}:/usr/local/bin:/usr/bin:/bin OSMODA_AGENTD_SOCKET=${stack.agentdSocket} OSMODA_WATCH_SOCKET=${stack.watchSocket}`,
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
    assert.match(r.stderr, new RegExp(`is live on root@127\\.0\\.0\\.1 as generation ${head.slice(0, 12)} \\(SafeSwitch \\d+ committed\\)`));
    const routines = JSON.parse(readFileSync(join(stack.etc, "osmoda", "routines.json"), "utf8"));
    assert.equal(routines.routines["disk-usage"].trigger.seconds, 600);
    // Again: the host already has it; it is applied again, nothing new recorded.
    const again = deploy();
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, new RegExp(`already has this configuration \\(generation ${head.slice(0, 12)}\\); applying it`));
    assert.equal(stack.git("rev-parse", "HEAD"), head);

    // The host's agent commits between the record and the switch: the pushed configuration is
    // what gets applied (as a new generation restoring its tree), not the host's newest.
    const f2 = join(here, "osmoda.nix");
    writeFileSync(f2, readFileSync(f2, "utf8").replace("seconds = 600;", "seconds = 1200;"));
    git(here, "commit", "-q", "-am", "disk usage every twenty minutes");
    writeFileSync(join(dir, "interloper"), "");
    const third = deploy();
    assert.equal(third.status, 0, `${third.stdout}\n${third.stderr}`);
    assert.ok(!existsSync(join(dir, "interloper")), "the host's agent committed in between");
    const log = stack.git("log", "-3", "--format=%s").split("\n");
    assert.equal(log[1], "the host's agent: disk usage every fifteen minutes");
    assert.match(log[2]!, /^Revert to generation [0-9a-f]+: disk usage every twenty minutes$/, log.join("\n"));
    assert.match(log[0]!, /^Switch to generation [0-9a-f]+/, log.join("\n"));
    assert.equal(stack.git("rev-parse", "HEAD^{tree}"), git(here, "rev-parse", "HEAD^{tree}"), "HEAD restores the pushed tree");
    const now = JSON.parse(readFileSync(join(stack.etc, "osmoda", "routines.json"), "utf8"));
    assert.equal(now.routines["disk-usage"].trigger.seconds, 1200, "the pushed value is live, not the host's 900");
  });
});
