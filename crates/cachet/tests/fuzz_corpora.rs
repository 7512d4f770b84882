//! Replays the fuzzers' committed inputs (`fuzz/corpus/<target>/`: seeds and what the
//! fuzzer kept; `fuzz/regressions/<target>/`: every input that once crashed, named after
//! what it broke) through the same functions `fuzz/` runs under libFuzzer, so that CI,
//! on stable and without a fuzzer, keeps every one of them fixed.

use std::path::Path;

#[test]
fn every_committed_fuzz_input_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut ran = 0;
    for (target, _) in cachet::fuzzing::TARGETS {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for file in dir.flatten() {
                let data = std::fs::read(file.path()).unwrap();
                assert!(cachet::fuzzing::run(target, &data));
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no committed input for fuzz target {target}");
        ran += inputs;
    }
    eprintln!("{ran} fuzz inputs replayed");
}

#[test]
fn every_fuzz_target_has_its_libfuzzer_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (target, _) in cachet::fuzzing::TARGETS {
        let source = std::fs::read_to_string(root.join(format!("{target}.rs"))).unwrap();
        assert!(
            source.contains(&format!("cachet::fuzzing::{target}(data)")),
            "fuzz/fuzz_targets/{target}.rs does not call its target"
        );
    }
}
