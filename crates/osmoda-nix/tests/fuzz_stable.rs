//! Runs the `fuzz/` target's body (`osmoda_nix::fuzz_one`) over generated inputs on stable Rust,
//! so CI checks the fuzz property: no panic, never an unparsable result.

use proptest::prelude::*;

const SEEDS: &[&str] = &[
    "{ }",
    "{ config, ... }:\n{\n  a.b = 1;\n  c = { d = [ 1 2 ]; };\n}\n",
    "{\n\ta = {   x=1; };\n\tl = [\n\t\t\"s\" # c\n\t];\n}\n",
    "rec { a = 1; b = a; inherit (x) y; }",
    "let x = 1; in { a = x; }",
    "{ a = ''\n  multi ''${x}\n''; p = ./path; }",
    "{ a = { }; a.b = [ ]; \"q.k\" = null; }",
    "{ lib, pkgs, ... }:\nwith lib;\n{\n  imports = [ { a.b = mkForce 1; } ./x.nix ];\n  l = with pkgs; [ git ];\n}\n",
    "{ config, ... }:\r\n{\r\n  # c\r\n  a = lib.mkOverride 50 (1);\r\n}\r\n",
    "\u{feff}{ options.x = 1; config = { a.b = 2; }; }",
    "{ inputs.n.url = \"x\"; outputs = { ... }: { nixosConfigurations.h = f { modules = [ { a = 1; } ]; }; }; }",
];

const PATHS: &[&str] = &["a", "a.b", "c.d", "l", "a.x.y", "\"q.k\"", "if", "imports"];
const VALUES: &[&str] = &[
    "1",
    "\"s\"",
    "[1,{\"k\":null}]",
    "{}",
    "{\"a\":{\"b\":-2.5}}",
    "pkgs.htop",
    "lib.mkForce 1",
    "x: x",
    "1 +",
    "\"${x}\"",
    "lib.mkDefault [ 1 ]",
    "with pkgs; [ htop ]",
    "1 # trailing",
    "{\n  x = 1;\n}",
];

fn input() -> impl Strategy<Value = Vec<u8>> {
    let mutations = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(vec![
                "{", "}", ";", "=", " ", "\n", "[", "]", "\"", "a", ".", "#", "''", "${", "rec ",
                "with x; ", "1",
            ]),
        ),
        0..4,
    );
    (
        any::<u8>(),
        prop::sample::select(PATHS),
        prop::sample::select(VALUES),
        prop::sample::select(SEEDS),
        mutations,
    )
        .prop_map(|(sel, path, value, seed, muts)| {
            let mut file = seed.to_string();
            for (idx, kind, text) in muts {
                let mut at = idx.index(file.len() + 1);
                while !file.is_char_boundary(at) {
                    at -= 1;
                }
                match kind {
                    0 => file.insert_str(at, text),
                    1 if at < file.len() => {
                        let mut end = at + 1;
                        while !file.is_char_boundary(end) {
                            end += 1;
                        }
                        file.replace_range(at..end, "");
                    }
                    _ => file.insert_str(at, text),
                }
            }
            let mut data = vec![sel];
            data.extend_from_slice(format!("{path}\n{value}\n{file}").as_bytes());
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn fuzz_body_holds(data in input()) {
        osmoda_nix::fuzz_one(&data);
    }

    #[test]
    fn fuzz_body_holds_on_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        osmoda_nix::fuzz_one(&data);
    }
}

/// Fragments that nest or chain when repeated (see `osmoda_nix::fuzz_raw`).
const FRAGMENTS: &[&str] = &[
    "[",
    "-",
    "1+",
    "(",
    "{a=",
    "!",
    "a ++ ",
    "with a; ",
    "let a = 1; in ",
    "x: ",
    "\"${",
    "[ 1 ",
    "lib.mkForce ",
    " x",
    "]",
    "\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn raw_value_fuzz_body_holds(
        selector in any::<u8>(),
        path in prop::sample::select(PATHS),
        parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 1..4),
    ) {
        let mut data = vec![selector];
        data.extend_from_slice(format!("{path}\n{}", parts.concat()).as_bytes());
        osmoda_nix::fuzz_raw(&data);
    }
}

#[test]
fn raw_value_fuzz_body_holds_on_the_known_deep_inputs() {
    // The three inputs that once aborted agentd, each at 2^15 repetitions, on a 1 MiB stack.
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            for fragment in ["[", "-", "1+", "(", "{a="] {
                for sel in [0x0f, 0x4f, 0x5f, 0x2f] {
                    let mut data = vec![sel];
                    data.extend_from_slice(format!("a.b\n{fragment}").as_bytes());
                    osmoda_nix::fuzz_raw(&data);
                }
            }
        })
        .expect("spawn")
        .join()
        .expect("no panic, no overflow");
}
