//! The fuzz targets' inputs as regression tests, on stable and without libFuzzer.
//!
//! Each fuzz target's harness (`fuzz/src/<target>.rs`, included here as it is) runs on:
//! - every minimized crash input saved under `tests/fuzz_regressions/<target>/`, beside a
//!   `<input>.expect` file saying what persona must do with it: `ok` (accepted), or
//!   `err: <text>` (refused with a message containing that text);
//! - every committed seed in `fuzz/corpus/<target>/`, which must not panic.
//!
//! A panic in either is the bug coming back.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

type Run = fn(&[u8]) -> Result<(), String>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of a directory in name order, without the `.expect` files; none when it is absent.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "expect"))
        .collect();
    files.sort();
    files
}

/// Runs the harness on one input; a panic is returned as its message.
fn outcome(run: Run, input: &Path) -> Result<Result<(), String>, String> {
    let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
    catch_unwind(AssertUnwindSafe(|| run(&bytes))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Runs a target's saved crashes (checking each against its `.expect`) and its seeds.
fn check(target: &str, run: Run) {
    let mut problems = Vec::new();
    let crashes = inputs(&root().join("tests/fuzz_regressions").join(target));
    for input in &crashes {
        let name = input.display();
        let expect_path = PathBuf::from(format!("{}.expect", input.display()));
        let expected = std::fs::read_to_string(&expect_path).unwrap_or_else(|e| {
            panic!(
                "{name} needs `{}` (`ok` or `err: <text>`): {e}",
                expect_path.display()
            )
        });
        let expected = expected.trim();
        match (outcome(run, input), expected) {
            (Err(panic), _) => problems.push(format!("{name}: panicked: {panic}")),
            (Ok(Ok(())), "ok") => {}
            (Ok(Err(message)), want)
                if want
                    .strip_prefix("err:")
                    .is_some_and(|w| message.contains(w.trim())) => {}
            (Ok(got), want) => problems.push(format!("{name}: expected `{want}`, got {got:?}")),
        }
    }
    let seeds = inputs(&root().join("fuzz/corpus").join(target));
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
    for input in &seeds {
        if let Err(panic) = outcome(run, input) {
            problems.push(format!("{}: panicked: {panic}", input.display()));
        }
    }
    assert!(problems.is_empty(), "{target}:\n{}", problems.join("\n"));
}

#[test]
fn dataset_inputs_never_panic() {
    check("dataset", harness::dataset::run);
}

#[test]
fn artifact_inputs_never_panic() {
    check("artifact", harness::artifact::run);
}

#[test]
fn filter_inputs_never_panic() {
    check("filter", harness::filter::run);
}

#[test]
fn reply_parser_inputs_never_panic() {
    check("reply_parser", harness::reply_parser::run);
}

#[test]
fn serve_body_inputs_never_panic() {
    check("serve_bodies", harness::serve_bodies::run);
}

/// The artifact seed must open: a seed the reader refuses would leave the fuzzer exploring only
/// the refusals.
#[test]
fn the_artifact_seed_opens_and_answers() {
    for seed in inputs(&root().join("fuzz/corpus/artifact")) {
        let result = outcome(harness::artifact::run, &seed).expect("no panic");
        assert_eq!(result, Ok(()), "{}", seed.display());
    }
}

/// A small xorshift generator: the smoke needs no crate for randomness, and a printed seed
/// repeats a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to eight random edits of `input`: flipped bits, interesting bytes, inserted, deleted or
/// repeated runs, and splices from another seed.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'\\', b'0'][rng.below(8)];
            }
            2 => input.insert(at, rng.next() as u8),
            3 if at < input.len() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            4 if at < input.len() => {
                let end = (at + 1 + rng.below(32)).min(input.len());
                let run = input[at..end].to_vec();
                input.splice(at..at, run);
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
}

/// CI's fuzz smoke, on stable: every harness on randomly mutated seeds for
/// `PERSONA_FUZZ_SMOKE_SECONDS` in all (default 60), split evenly. It is not libFuzzer (no
/// coverage guidance): building the libFuzzer targets from scratch costs about 21 CPU-minutes,
/// so CI runs this and `scripts/fuzz.sh` is for longer runs. Ignored in the ordinary suite;
/// `.ci/run` runs it with `--ignored`. A panic fails it, with the input saved and the seed to
/// repeat the run (`PERSONA_FUZZ_SEED`).
#[test]
#[ignore = "CI's timed fuzz smoke: cargo test --test fuzz_regressions -- --ignored"]
fn mutation_smoke() {
    let total: f64 = std::env::var("PERSONA_FUZZ_SMOKE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(60.0);
    // Odd, so never the generator's stuck state 0.
    let seed = std::env::var("PERSONA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    let targets: [(&str, Run); 5] = [
        ("dataset", harness::dataset::run),
        ("artifact", harness::artifact::run),
        ("filter", harness::filter::run),
        ("reply_parser", harness::reply_parser::run),
        ("serve_bodies", harness::serve_bodies::run),
    ];
    let per_target = std::time::Duration::from_secs_f64(total / targets.len() as f64);
    let mut rng = Rng(seed);
    println!("fuzz smoke: seed {seed}, {per_target:?} per target");
    for (target, run) in targets {
        let seeds: Vec<Vec<u8>> = inputs(&root().join("fuzz/corpus").join(target))
            .iter()
            .chain(&inputs(&root().join("tests/fuzz_regressions").join(target)))
            .map(|p| std::fs::read(p).expect("a readable seed"))
            .collect();
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
        let started = std::time::Instant::now();
        let mut executions = 0u64;
        while started.elapsed() < per_target {
            let mut input = seeds[rng.below(seeds.len())].clone();
            let other = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, &mut input, other);
            executions += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&input))) {
                let saved = std::env::temp_dir().join(format!("persona-fuzz-smoke-{target}-{seed}"));
                let _ = std::fs::write(&saved, &input);
                panic!(
                    "{target}: panicked on a mutated input (saved to {}; PERSONA_FUZZ_SEED={seed}): {:?}",
                    saved.display(),
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or(panic.downcast_ref::<&str>().copied())
                );
            }
        }
        println!(
            "fuzz smoke: {target:<13} {:>5.1} s {executions:>9} executions, 0 panics",
            started.elapsed().as_secs_f64()
        );
    }
}
