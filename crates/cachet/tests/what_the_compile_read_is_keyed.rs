//! Every file and variable a compile reads, or looks for and does not find, is in the key,
//! whether or not the compiler's dependency output names it: `.incbin` and `.include`
//! data, a `.gch` used in place of its header, `__has_include` probes, a new header that
//! shadows a system header. Each scenario compiles, changes one input, and compiles again;
//! every object must be the plain compiler's for the inputs as they are then. The
//! scenarios run in direct mode, in preprocessor mode, with observation turned off, and
//! through a wrapper that hides the compiler from the interposer (the fallback rules).

mod common;

use std::path::Path;

use common::*;

/// One input that a dependency list does not show, and a change to it.
struct Scenario {
    name: &'static str,
    /// Files before the change: (path, text).
    files: &'static [(&'static str, &'static str)],
    source: &'static str,
    extra_args: &'static [&'static str],
    change: fn(&Env, &str),
    /// Only gcc uses a `.gch` found beside a header.
    gcc_only: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: ".incbin data",
        files: &[("data.bin", "first")],
        source: "int x;\n__asm__(\".section .rodata\\n.incbin \\\"data.bin\\\"\\n.text\");\n",
        extra_args: &[],
        change: |env, _| {
            env.write("data.bin", "second");
        },
        gcc_only: false,
    },
    Scenario {
        name: "assembler .include",
        files: &[("defs.inc", ".byte 1\n")],
        source: "int x;\n__asm__(\".section .rodata\\n.include \\\"defs.inc\\\"\\n.text\");\n",
        extra_args: &[],
        change: |env, _| {
            env.write("defs.inc", ".byte 2\n");
        },
        gcc_only: false,
    },
    Scenario {
        name: "__has_include",
        files: &[],
        source: "#if __has_include(\"opt.h\")\nint opt = 1;\n#else\nint opt = 0;\n#endif\n",
        extra_args: &[],
        change: |env, _| {
            env.write("opt.h", "/* now present */\n");
        },
        gcc_only: false,
    },
    Scenario {
        name: "a new header shadowing a system header",
        files: &[("include/.keep", "")],
        source: "#include <stdint.h>\n#ifdef SHADOWED\nint s = 2;\n#else\nint s = 1;\n#endif\n",
        extra_args: &["-Iinclude"],
        change: |env, _| {
            env.write("include/stdint.h", "#define SHADOWED 1\n");
        },
        gcc_only: false,
    },
    Scenario {
        name: "a .gch used in place of its header",
        files: &[("test.h", "#define V 1\n")],
        source: "#include \"test.h\"\nint v = V;\n",
        extra_args: &[],
        change: |env, cc| {
            env.write("test.h", "#define V 2\n");
            let status = env
                .command(cc)
                .args(["-x", "c-header", "test.h", "-o", "test.h.gch"])
                .status()
                .unwrap();
            assert!(status.success());
            backdate(&env.work.join("test.h.gch"));
            // The header itself goes back to V 1: only the .gch says 2.
            env.write("test.h", "#define V 1\n");
        },
        gcc_only: true,
    },
];

fn backdate(path: &Path) {
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(past)
        .unwrap();
}

/// How cachet is set up for a run of every scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Direct,
    Preprocessor,
    ObservationOff,
    /// The compiler runs under a wrapper that clears LD_PRELOAD: observed incompletely.
    HiddenCompiler,
}

fn env_for(setup: Setup) -> Env {
    match setup {
        Setup::Direct | Setup::HiddenCompiler => Env::new(),
        Setup::Preprocessor => Env::new().with_env("CACHET_DIRECT_MODE", "0"),
        Setup::ObservationOff => Env::new().with_env("CACHET_OBSERVE", "0"),
    }
}

/// The plain compiler's object for the inputs as they are now.
fn plain_object(env: &Env, cc: &str, args: &[&str]) -> Vec<u8> {
    let out = env
        .command(cc)
        .args(args)
        .args(["-o", "plain.o"])
        .output()
        .unwrap();
    assert!(out.status.success(), "plain {cc}: {}", stderr(&out));
    std::fs::read(env.work.join("plain.o")).unwrap()
}

fn run_scenarios(setup: Setup) {
    for cc in compilers() {
        for scenario in SCENARIOS {
            if scenario.gcc_only && cc != "gcc" {
                continue;
            }
            let env = env_for(setup);
            for (path, text) in scenario.files {
                env.write(path, text);
            }
            env.write("t.c", scenario.source);
            let compiler = match setup {
                Setup::HiddenCompiler => {
                    let wrapper = env.dir.path().join("bin").join(format!("{cc}-hidden"));
                    std::fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
                    script(&wrapper, &format!("unset LD_PRELOAD\nexec {cc} \"$@\"\n"));
                    wrapper.to_str().unwrap().to_owned()
                }
                _ => cc.to_owned(),
            };
            let mut args = vec!["-c", "t.c"];
            args.extend(scenario.extra_args);
            let what = format!("{cc} {setup:?} {}", scenario.name);

            let compile = |round: &str| {
                let mut full = vec![compiler.as_str()];
                full.extend(&args);
                full.extend(["-o", "t.o"]);
                env.ok(&full);
                let plain = plain_object(&env, cc, &args);
                let got = std::fs::read(env.work.join("t.o")).unwrap();
                assert!(
                    got == plain,
                    "{what}, {round}: not the plain compiler's object"
                );
                env.settle();
            };
            compile("first");
            let stats = env.stats();
            assert_eq!(
                stats["counters"]["cache_misses"], 1,
                "{what}: not cached: {stats}"
            );
            if setup == Setup::HiddenCompiler {
                assert_eq!(
                    stats["counters"]["unobserved_compiles"], 1,
                    "{what}: {stats}"
                );
            }
            compile("again");
            let hits_before = env.counter("cache_hits");
            if matches!(setup, Setup::Direct | Setup::Preprocessor) {
                assert_eq!(hits_before, 1, "{what}: the unchanged compile did not hit");
            }
            (scenario.change)(&env, cc);
            compile("after the change");
            assert_eq!(
                env.counter("cache_hits"),
                hits_before,
                "{what}: the change was served from the cache"
            );
        }
    }
}

#[test]
fn direct_mode_keys_what_the_compile_read() {
    run_scenarios(Setup::Direct);
}

#[test]
fn preprocessor_mode_keys_what_the_compile_read() {
    run_scenarios(Setup::Preprocessor);
}

#[test]
fn without_observation_the_fallback_is_never_wrong() {
    run_scenarios(Setup::ObservationOff);
}

#[test]
fn a_compiler_the_interposer_cannot_see_falls_back_and_is_never_wrong() {
    run_scenarios(Setup::HiddenCompiler);
}

/// The stats say whether compiles are observed, and count what was.
#[test]
fn stats_show_observation() {
    let env = Env::new();
    env.write("t.c", "int t;\n");
    env.ok(&["gcc", "-c", "t.c"]);
    let stats = env.settle();
    assert_eq!(stats["observation"], "on", "{stats}");
    assert_eq!(stats["counters"]["observed_compiles"], 1, "{stats}");

    let off = Env::new().with_env("CACHET_OBSERVE", "false");
    off.write("t.c", "int t;\n");
    off.ok(&["gcc", "-c", "t.c"]);
    let stats = off.settle();
    assert_eq!(stats["observation"], "off: observe = false", "{stats}");
    // Direct mode needs observation: the compile went to preprocessor mode.
    assert_eq!(stats["counters"]["cache_misses"], 1, "{stats}");
    off.ok(&["gcc", "-c", "t.c"]);
    let stats = off.stats();
    assert_eq!(stats["counters"]["cache_hits"], 1, "{stats}");
    assert_eq!(stats["counters"]["direct_hits"], 0, "{stats}");
}
