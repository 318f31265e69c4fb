//! The caps against the real evaluator: CPU, memory, wall clock, a trace larger than a pipe,
//! and the slot limit.
#![allow(clippy::unwrap_used)]

use super::*;

fn nix() -> Option<std::path::PathBuf> {
    let found = crate::validate::find_nix_instantiate();
    if found.is_none() {
        println!("skipped: nix-instantiate not installed");
    }
    found
}

fn eval(expr: &str) -> Command {
    let mut c = Command::new(nix().unwrap());
    c.args(["--eval", "--strict", "--expr", expr]);
    c
}

#[test]
fn a_cheap_expression_runs_within_the_caps() {
    if nix().is_none() {
        return;
    }
    let out = run(eval("1 + 2"), &Caps::RAW_VALUE).unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert_eq!(out.exceeded, None);
}

#[test]
fn a_slow_fold_is_stopped_at_its_cpu_cap() {
    if nix().is_none() {
        return;
    }
    let caps = Caps {
        cpu_secs: 1,
        ..Caps::RAW_VALUE
    };
    let started = Instant::now();
    let out = run(
        eval("builtins.foldl' (a: b: a + b) 0 (builtins.genList (x: x) 1000000000)"),
        &Caps {
            wall: Duration::from_secs(120),
            memory_bytes: 8 << 30,
            ..caps
        },
    )
    .unwrap();
    assert!(!out.success());
    assert_eq!(out.exceeded, Some(Exceeded::Cpu(1)), "{out:?}");
    assert!(out.exceeded.unwrap().to_string().contains("CPU time"));
    // Only a bound against hanging forever; the cap itself is CPU time, not wall time.
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn a_large_value_is_stopped_at_its_memory_cap() {
    if nix().is_none() {
        return;
    }
    let caps = Caps {
        cpu_secs: 60,
        memory_bytes: 256 << 20,
        wall: Duration::from_secs(120),
    };
    let out = run(
        eval("builtins.length (builtins.genList (x: toString x) 50000000)"),
        &caps,
    )
    .unwrap();
    assert!(!out.success());
    assert_eq!(out.exceeded, Some(Exceeded::Memory(256 << 20)), "{out:?}");
    assert!(out.exceeded.unwrap().to_string().contains("256 MiB"));
}

#[test]
fn a_trace_larger_than_a_pipe_does_not_stall_the_child() {
    if nix().is_none() {
        return;
    }
    // ~400 KiB on stderr before the value: more than a pipe holds (64 KiB).
    let out = run(
        eval("builtins.trace (builtins.concatStringsSep \"\" (builtins.genList (x: \"0123456789\") 40000)) 7"),
        &Caps::VALIDATE,
    )
    .unwrap();
    assert!(out.success(), "{:?}", out.exceeded);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    assert!(out.stderr.len() > 400_000, "{}", out.stderr.len());
}

#[test]
fn the_wall_clock_deadline_kills() {
    let mut c = Command::new("sleep");
    c.arg("30");
    let caps = Caps {
        wall: Duration::from_millis(200),
        ..Caps::RAW_VALUE
    };
    let out = run(c, &caps).unwrap();
    assert_eq!(out.status, None);
    assert_eq!(out.exceeded, Some(Exceeded::Wall(caps.wall)));
}

#[test]
fn no_more_than_max_concurrent_run_at_once() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&done);
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(in_use());
            std::thread::sleep(Duration::from_millis(1));
        }
        peak
    });
    let runs: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(|| {
                let mut c = Command::new("sleep");
                c.arg("0.2");
                run(c, &Caps::RAW_VALUE).unwrap().success()
            })
        })
        .collect();
    for r in runs {
        assert!(r.join().unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    assert!((1..=MAX_CONCURRENT).contains(&peak), "{peak}");
}
