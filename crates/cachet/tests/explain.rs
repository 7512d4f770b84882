//! `cachet explain`: each test is a real compile pair that must miss, and the named cause.
//! (The Rust causes are in cargo_build.rs, beside the workspaces they build.)

mod common;

use std::path::Path;

use common::*;

/// `cachet explain ARGS…`, its text.
fn explain(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    let out = env.ok(&all);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles `a.c` to `a.o` through cachet with `args` and waits for its explanation.
fn compile(env: &Env, compiler: &str, args: &[&str]) {
    let mut all = vec![compiler, "-c", "a.c", "-o", "a.o"];
    all.extend_from_slice(args);
    env.ok(&all);
    env.ok(&["--flush"]);
}

fn setup() -> Env {
    let env = Env::new();
    env.write("a.c", "#include \"util.h\"\nint f(void) { return U; }\n");
    env.write("util.h", "#define U 1\n");
    env
}

fn assert_says(text: &str, cause: &str) {
    assert!(text.contains(cause), "expected `{cause}` in:\n{text}");
}

#[test]
fn the_first_compile_an_argument_change_and_a_header_change_are_named() {
    let env = setup();
    compile(&env, "gcc", &["-O2"]);
    assert_says(&explain(&env, &["a.o"]), "first compile of this output");
    compile(&env, "gcc", &["-O3"]);
    let text = explain(&env, &["a.o"]);
    assert_says(&text, "argument changed: -O2 → -O3");
    assert_says(&text, "(C: a.o from a.c)");
    compile(&env, "gcc", &["-O3", "-DNDEBUG"]);
    assert_says(&explain(&env, &["a.o"]), "argument added: -DNDEBUG");
    env.write("util.h", "#define U 2\n");
    compile(&env, "gcc", &["-O3", "-DNDEBUG"]);
    assert_says(&explain(&env, &["a.o"]), "header changed: util.h (content)");
    // The last misses, oldest first.
    let last = explain(&env, &["--last", "2"]);
    assert!(
        last.find("-DNDEBUG").unwrap() < last.find("header changed").unwrap(),
        "{last}"
    );
    // JSON for scripts.
    let json: serde_json::Value = serde_json::from_str(&explain(&env, &["--json", "a.o"])).unwrap();
    assert_eq!(
        json[0]["explanation"]["causes"][0],
        "header changed: util.h (content)"
    );
}

#[test]
fn a_header_that_now_shadows_another_is_named() {
    let env = Env::new();
    env.write("a.c", "#include \"config.h\"\nint f(void) { return C; }\n");
    env.write("inc2/config.h", "#define C 2\n");
    std::fs::create_dir_all(env.work.join("inc1")).unwrap();
    let flags = ["-Iinc1", "-Iinc2"];
    compile(&env, "gcc", &flags);
    env.write("inc1/config.h", "#define C 1\n");
    compile(&env, "gcc", &flags);
    assert_says(
        &explain(&env, &["a.o"]),
        "header now found first: inc1/config.h shadows inc2/config.h",
    );
}

#[test]
fn an_environment_change_is_named() {
    let env = setup();
    compile(&env, "gcc", &[]);
    env.ok(&["--flush"]);
    let out = env
        .cachet()
        .args(["gcc", "-c", "a.c", "-o", "a.o"])
        .env("LC_MESSAGES", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success());
    env.ok(&["--flush"]);
    assert_says(
        &explain(&env, &["a.o"]),
        "environment changed: LC_MESSAGES (unset) → C.UTF-8",
    );
}

#[test]
fn another_compiler_binary_is_named() {
    // A copy of gcc finds its cc1 through GCC_EXEC_PREFIX (both compiles have it).
    let env = setup().with_env("GCC_EXEC_PREFIX", "/usr/lib/gcc/");
    compile(&env, "gcc", &[]);
    // A copy of gcc with another digest (bytes after the ELF image change nothing it does).
    let copy = env.dir.path().join("bin/gcc");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read("/usr/bin/gcc").unwrap_or_else(|_| {
        std::fs::read(Path::new("/usr/bin").join(std::fs::read_link("/usr/bin/gcc").unwrap()))
            .unwrap()
    });
    bytes.extend_from_slice(b"another build");
    write_executable(&copy, &bytes);
    compile(&env, copy.to_str().unwrap(), &[]);
    let text = explain(&env, &["a.o"]);
    assert_says(&text, "compiler changed: gcc ");
    assert_says(&text, "(binary digest ");
}

#[test]
fn an_evicted_entry_and_an_uncacheable_link_are_named() {
    let env = setup();
    compile(&env, "gcc", &[]);
    env.ok(&["--clear"]);
    compile(&env, "gcc", &[]);
    assert_says(&explain(&env, &["a.o"]), "entry was evicted");

    env.write("main.c", "int main(void) { return 0; }\n");
    env.ok(&["gcc", "-c", "main.c", "-o", "main.o"]);
    env.ok(&["gcc", "main.o", "-o", "app"]);
    env.ok(&["--flush"]);
    assert_says(&explain(&env, &["app"]), "uncacheable: linking (no -c)");
    assert_says(
        &explain(&env, &["nothing.o"]),
        "nothing.o: no miss of it is known",
    );
}

#[test]
fn no_secret_reaches_a_recipe_or_an_explanation() {
    let env = setup();
    let secret = "planted-secret-4711";
    compile(&env, "gcc", &[]);
    let out = env
        .cachet()
        .args(["gcc", "-c", "a.c", "-o", "a.o"])
        .arg(format!("-DAPI_KEY=\"{secret}\""))
        .env("MY_SERVICE_TOKEN", secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    env.ok(&["--flush"]);
    let text = explain(&env, &["a.o"]) + &explain(&env, &["--json", "--last", "5"]);
    assert_says(&text, "argument added: -DAPI_KEY=<hidden ");
    assert!(!text.contains(secret), "{text}");
    let mut files = Vec::new();
    collect(&env.cache_dir.join("explain"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the secret",
            file.display()
        );
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            collect(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

#[test]
fn a_remote_level_that_failed_the_lookup_is_named() {
    // A redis level at a port where nothing listens: each read fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = setup()
        .with_env(
            "CACHET_REDIS_ENDPOINT",
            &format!("redis://127.0.0.1:{port}"),
        )
        .with_env("CACHET_REDIS_TIMEOUT", "2s");
    compile(&env, "gcc", &[]);
    let text = explain(&env, &["a.o"]);
    assert_says(&text, "remote level errors (redis: ");
    assert_says(&text, "first compile of this output");
    // The trace has the level that served a hit, the key and the size.
    env.ok(&["gcc", "-c", "a.c", "-o", "a.o"]);
    let file = env.dir.path().join("t.json");
    env.ok(&["trace", "--output", file.to_str().unwrap()]);
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let hit = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cat"] == "request" && e["args"]["outcome"] == "hit")
        .unwrap();
    assert_eq!(hit["args"]["level"], "local");
    assert!(hit["args"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(hit["args"]["key"].as_str().unwrap().len(), 16);
}
