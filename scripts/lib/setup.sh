# Shared setup for scripts/test and scripts/dev (sourced, not run): a Rust toolchain new enough
# for this Cargo.lock, a C compiler, and the Debian packages the tests use.
#
# Rust: an installed toolchain is used when it is at least the workspace's `rust-version`
# (Cargo.toml). Otherwise the toolchain is installed the standard way, with rustup, into
# ~/.rustup and ~/.cargo (shell profiles are not touched). Debian's apt `cargo` (1.63 on
# Debian 12) cannot read this Cargo.lock and is never installed.

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root for: $* (run as root, or install sudo)"; fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing $*; install them with your package manager and rerun"
  say "installing $* (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need_packages CMD:PACKAGE ...: installs the packages whose command is missing.
need_packages() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
}

# The `rust-version` of the workspace, e.g. 1.85.
rust_required() {
  sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -1
}

# rust_ok: cargo and rustc on PATH, both at least rust_required.
rust_ok() {
  local want have v tool
  want=$(rust_required)
  for tool in cargo rustc; do
    command -v "$tool" >/dev/null 2>&1 || return 1
    v=$("$tool" --version 2>/dev/null | awk '{print $2}')
    have=${v%%-*}
    [ -n "$have" ] || return 1
    [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" = "$want" ] || return 1
  done
}

need_c_compiler() {
  if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    say "no C compiler (needed to build the bundled SQLite and libgit2)"
    apt_install gcc libc6-dev
  fi
}

need_rust() {
  local want
  want=$(rust_required)
  if rust_ok; then return 0; fi
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    if rust_ok; then say "using the Rust toolchain in ~/.cargo/bin ($(cargo --version))"; return 0; fi
  fi
  if command -v rustup >/dev/null 2>&1; then
    say "Rust on PATH is older than $want; installing the stable toolchain with rustup"
    rustup toolchain install stable --profile minimal
    export RUSTUP_TOOLCHAIN=stable
    rust_ok || die "rustup's stable toolchain is still older than $want"
    return 0
  fi
  if command -v cargo >/dev/null 2>&1; then
    say "$(cargo --version) is older than Rust $want (this Cargo.lock needs $want); installing rustup"
  else
    say "no Rust toolchain; installing Rust with rustup (https://rustup.rs) into ~/.cargo and ~/.rustup"
  fi
  need_packages curl:curl
  [ -e /etc/ssl/certs/ca-certificates.crt ] || apt_install ca-certificates
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --quiet --profile minimal --default-toolchain stable --no-modify-path
  export PATH="$HOME/.cargo/bin:$PATH"
  rust_ok || die "rustup installed $(cargo --version 2>/dev/null), still older than $want"
  say "installed $(cargo --version); add ~/.cargo/bin to your PATH to use it outside these scripts"
}

# test_git_identity: tests create git repositories; their commits name their authors
# explicitly, and anything that falls back to git's configured identity gets this one when you
# have none. Command-scope config through the environment: an explicit `git -c user.name=…`
# still wins, and nothing is written to ~/.gitconfig.
test_git_identity() {
  if ! git config user.email >/dev/null 2>&1 && [ -z "${GIT_CONFIG_COUNT:-}" ]; then
    export GIT_CONFIG_COUNT=2
    export GIT_CONFIG_KEY_0=user.name GIT_CONFIG_VALUE_0="osmoda tests"
    export GIT_CONFIG_KEY_1=user.email GIT_CONFIG_VALUE_1="tests@osmoda.invalid"
  fi
}

# report_skips: filters `cargo test -- --show-output`. A test that cannot run here (no root, no
# <nixpkgs>, no nixos-eval) passes after printing "skipped: why", and cargo hides a passing
# test's output; this keeps only those lines, named after their test, drops the other output of
# passing tests, passes everything else (failures in full) through, and counts the skips, so a
# skip is never silently reported as a pass.
report_skips() {
  awk '
    /^successes:$/ { quiet = 1; next }
    /^failures:$/ || /^test result:/ { quiet = 0 }
    quiet && /^---- .* std(out|err) ----$/ { name = $2; next }
    quiet && /^skipped/ { print "skipped: " name ": " substr($0, index($0, ":") + 2); n++; next }
    quiet { next }
    { print }
    END { if (n) print "==> " n " test(s) above did not run here; cargo counts them as passed" }
  '
}
