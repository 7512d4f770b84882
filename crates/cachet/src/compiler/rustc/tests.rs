//! The rustc key and flow over the mock process seam: which argument changes change the
//! key and which do not, and how many rustc processes a miss and a hit cost.

use std::collections::HashMap;
use std::time::Duration;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use cachet_jobserver::Jobserver;

use super::args::{CrateType, Emit, RustcArgs};
use super::key::plain_path;
use super::pipeline::rewrite_out_dir;
use super::plan::{display_key, has_diagnostics, output_names};
use super::reasons::NotCacheable;
use super::*;
use crate::cache::{Cache, CacheKey, DiskCache, DiskStorage};
use crate::compiler::CompileService;
use crate::compiler::tests::support as test_support;
use crate::process::mock::{MockRunner, output};
use crate::process::{CommandSpec, JOBSERVER_VARS, Launcher, ProcessOutput};
use crate::protocol::{CompileRequest, Exit, Response, to_bytes};
use crate::server::compile::invocation;
use crate::stats::Stats;

const HOST: &str = "x86_64-unknown-linux-gnu";

/// Plays rustc (writing the outputs cargo expects) and a C linker driver.
fn fake_tools(spec: &CommandSpec) -> io::Result<ProcessOutput> {
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = spec
        .program
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    if spec.env_var("LD_TRACE_LOADED_OBJECTS").is_some() {
        // What glibc's loader lists, whatever the LD_LIBRARY_PATH (none holds these).
        let objects = "\tlibc.so.6 => /lib/libc.so.6 (0x7f0000001000)\n";
        return Ok(output(0, objects.as_bytes(), b""));
    }
    if program.starts_with("cc") {
        return Ok(match args.first().map(String::as_str) {
            Some("--version") => output(0, format!("{program} (fake) 1.0\n").as_bytes(), b""),
            _ => output(0, b"", b""),
        });
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    let name = value("--crate-name").unwrap();
    let extra = args
        .iter()
        .find_map(|a| a.strip_prefix("extra-filename="))
        .unwrap_or("")
        .to_owned();
    let out_dir = spec.cwd.join(value("--out-dir").unwrap());
    std::fs::create_dir_all(&out_dir)?;
    let source = std::fs::read(spec.cwd.join("src/lib.rs"))?;
    std::fs::write(
        out_dir.join(format!("lib{name}{extra}.rlib")),
        [b"RLIB".as_slice(), &source].concat(),
    )?;
    std::fs::write(out_dir.join(format!("lib{name}{extra}.rmeta")), b"RMETA")?;
    std::fs::write(
        out_dir.join(format!("{name}{extra}.d")),
        format!(
            "{0}/lib{name}{extra}.rmeta: src/lib.rs\n\nsrc/lib.rs:\n\n# env-dep:GREETING=hi\n",
            out_dir.display()
        ),
    )?;
    let notice = format!(
        "{{\"$message_type\":\"artifact\",\"artifact\":\"{}/lib{name}{extra}.rmeta\",\"emit\":\"metadata\"}}\n",
        out_dir.display()
    );
    // A warning, rendered for the width asked for.
    let diagnostic = match (
        source.starts_with(b"// warn"),
        args.iter()
            .find_map(|a| a.strip_prefix("--diagnostic-width=")),
    ) {
        (true, Some(width)) => format!(
            "{{\"$message_type\":\"diagnostic\",\"rendered\":\"warning at width {width}\"}}\n"
        ),
        _ => String::new(),
    };
    Ok(output(0, b"", format!("{diagnostic}{notice}").as_bytes()))
}

/// Writes a source stamped a while ago: one modified within the timestamp resolution of
/// the compile's start is not trusted into a manifest.
fn write_old(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    work: PathBuf,
    toolchain: Arc<Toolchain>,
    mock: MockRunner,
    launcher: Launcher,
    service: CompileService,
    cache: Arc<Cache>,
    jobserver: Jobserver,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sysroot = dir.path().join("sysroot");
    let libdir = sysroot.join("lib/rustlib").join(HOST).join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::write(libdir.join("libstd-1.rlib"), "std").unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("src")).unwrap();
    std::fs::create_dir_all(work.join("deps")).unwrap();
    write_old(&work.join("src/lib.rs"), "pub fn f() {}");
    std::fs::write(work.join("deps/libdep-1.rlib"), "dep v1").unwrap();
    std::fs::write(work.join("deps/libdep-copy.rlib"), "dep v1").unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["cc", "cc2"] {
        // Settled: what is probed from a file changed just now is not remembered.
        write_old(&bin.join(tool), &format!("#!/bin/false {tool}\n"));
    }
    let toolchain = Arc::new(Toolchain::for_tests(
        "rustc 1.95.0 (fake)\nhost: x86_64-unknown-linux-gnu\n",
        HOST,
        &sysroot,
    ));
    let mock = MockRunner::new(fake_tools);
    let jobserver = Jobserver::new(2).unwrap();
    let stats = Arc::new(Stats::default());
    let disk = Arc::new(DiskCache::new(dir.path().join("cache"), 1 << 30));
    let cache = Arc::new(Cache::new(Arc::new(DiskStorage::new(disk)), stats.clone()));
    let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
    let service = CompileService::new(launcher.clone(), cache.clone(), stats);
    Fixture {
        dir,
        work,
        toolchain,
        mock,
        launcher,
        service,
        cache,
        jobserver,
    }
}

/// What cargo passes for a library with pipelining.
fn lib_args() -> Vec<String> {
    [
        "--crate-name",
        "foo",
        "--edition=2021",
        "src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "lib",
        "--emit=dep-info,metadata,link",
        "-C",
        "embed-bitcode=no",
        "-C",
        "debuginfo=2",
        "--cfg",
        "feature=\"a\"",
        "--cfg",
        "feature=\"b\"",
        "-C",
        "metadata=abc",
        "-C",
        "extra-filename=-abc",
        "--out-dir",
        "target",
        "-L",
        "dependency=deps",
        "--extern",
        "dep=deps/libdep-1.rlib",
    ]
    .map(String::from)
    .to_vec()
}

impl Fixture {
    fn request(&self, args: &[String], env: &[(&str, &str)]) -> CompileRequest {
        let path = format!("{}", self.dir.path().join("bin").display());
        let mut vars = vec![("PATH", path.as_str()), ("CARGO_PKG_VERSION", "0.1.0")];
        vars.extend_from_slice(env);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        test_support::request(Path::new("/toolchain/bin/rustc"), &self.work, &args, &vars)
    }

    async fn base(&self, args: &[String], env: &[(&str, &str)]) -> CacheKey {
        self.base_of(self.request(args, env)).await.unwrap().0
    }

    /// The base key of `request` as the family computes it, or why it has none.
    async fn base_of(
        &self,
        request: CompileRequest,
    ) -> Result<(CacheKey, crate::compiler::basedir::Maps), NotCacheable> {
        let invocation = invocation(request);
        let args::Parsed::Cacheable(parsed) = args::parse(&args::ParseInput {
            args: &invocation.args,
            cwd: &invocation.cwd,
        }) else {
            panic!("not cacheable: {:?}", invocation.args);
        };
        let rust = &self.service.rust;
        let context = &self.service.context;
        key::base_key(
            &rust.toolchains,
            &rust.linkers,
            context,
            &invocation,
            &self.toolchain,
            &parsed,
            HOST,
        )
        .await
        .unwrap()
        .map(|base| (base.key, base.maps))
    }

    async fn run(&self, args: &[String], env: &[(&str, &str)]) -> (Outcome, Vec<Response>) {
        let request = self.request(args, env);
        let (job, rx) = test_support::job(&self.launcher, request);
        let outcome = self
            .service
            .rust
            .compile(&self.service.context, &job, self.toolchain.clone())
            .await
            .unwrap();
        drop(job);
        let responses = test_support::responses(rx, &outcome);
        self.cache.pending().drain(Duration::from_secs(10)).await;
        (outcome, responses)
    }

    fn rustc_runs(&self) -> usize {
        self.mock
            .calls()
            .iter()
            .filter(|c| c.program.ends_with("rustc"))
            .count()
    }
}

fn replace(args: &[String], from: &str, to: &str) -> Vec<String> {
    args.iter()
        .map(|a| if a == from { to.to_owned() } else { a.clone() })
        .collect()
}

fn with(args: &[String], extra: &[&str]) -> Vec<String> {
    let mut out = args.to_vec();
    out.extend(extra.iter().map(|s| s.to_string()));
    out
}

#[tokio::test]
async fn what_changes_the_key_and_what_does_not() {
    let f = fixture();
    let args = lib_args();
    let base = f.base(&args, &[]).await;
    assert_eq!(base, f.base(&args, &[]).await, "the key is stable");

    let mut same: HashMap<&str, Vec<String>> = HashMap::new();
    // --cfg order does not matter to rustc.
    let mut swapped = args.clone();
    let a = swapped.iter().position(|x| x == "feature=\"a\"").unwrap();
    let b = swapped.iter().position(|x| x == "feature=\"b\"").unwrap();
    swapped.swap(a, b);
    same.insert("--cfg order", swapped);
    same.insert("diagnostic width", with(&args, &["--diagnostic-width=80"]));
    same.insert("colour", with(&args, &["--color=always"]));
    same.insert(
        "rendered-ansi",
        replace(
            &args,
            "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
            "--json=artifacts,future-incompat",
        ),
    );
    same.insert(
        "extern path with the same content",
        replace(&args, "dep=deps/libdep-1.rlib", "dep=deps/libdep-copy.rlib"),
    );
    same.insert(
        "-L dependency dir",
        replace(&args, "dependency=deps", "dependency=/elsewhere"),
    );
    for (what, changed) in &same {
        assert_eq!(
            f.base(changed, &[]).await,
            base,
            "{what} must not change the key"
        );
    }
    assert_eq!(
        f.base(&args, &[("CARGO_MAKEFLAGS", "-j --jobserver-auth=997,998")])
            .await,
        base,
        "CARGO_MAKEFLAGS"
    );

    let mut different: HashMap<&str, Vec<String>> = HashMap::new();
    different.insert("opt-level", with(&args, &["-C", "opt-level=3"]));
    different.insert(
        "a feature",
        replace(&args, "feature=\"b\"", "feature=\"c\""),
    );
    different.insert(
        "edition",
        replace(&args, "--edition=2021", "--edition=2024"),
    );
    different.insert("metadata", replace(&args, "metadata=abc", "metadata=abd"));
    different.insert(
        "error format",
        replace(&args, "--error-format=json", "--error-format=short"),
    );
    different.insert("crate name", replace(&args, "foo", "bar"));
    for (what, changed) in &different {
        assert_ne!(
            f.base(changed, &[]).await,
            base,
            "{what} must change the key"
        );
    }
    assert_ne!(
        f.base(&args, &[("CARGO_PKG_VERSION", "0.2.0")]).await,
        base,
        "a cargo variable"
    );
    assert_ne!(
        f.base(&args, &[("RUSTC_BOOTSTRAP", "1")]).await,
        base,
        "RUSTC_BOOTSTRAP"
    );

    // The extern's content.
    std::fs::write(f.work.join("deps/libdep-1.rlib"), "dep v2").unwrap();
    assert_ne!(f.base(&args, &[]).await, base, "extern content");
}

#[tokio::test]
async fn linked_crate_types_key_on_the_linker() {
    let f = fixture();
    let bin = replace(
        &replace(&lib_args(), "lib", "bin"),
        "--emit=dep-info,metadata,link",
        "--emit=dep-info,link",
    );
    let with_cc = f.base(&bin, &[]).await;
    let with_cc2 = f.base(&with(&bin, &["-C", "linker=cc2"]), &[]).await;
    assert_ne!(with_cc, with_cc2);
    // The linker was probed once, and never as a compile (no token, no jobserver).
    let probes: Vec<CommandSpec> = f
        .mock
        .calls()
        .into_iter()
        .filter(|c| c.program.ends_with("cc"))
        .collect();
    assert!(!probes.is_empty());
    assert!(
        probes
            .iter()
            .all(|c| c.inherit_fds.is_empty() && c.env_var("CARGO_MAKEFLAGS").is_none())
    );
    f.base(&bin, &[]).await;
    assert_eq!(
        f.mock
            .calls()
            .iter()
            .filter(|c| c.program.ends_with("cc"))
            .count(),
        probes.len()
    );
    // Linker-selecting link args are refused rather than guessed at.
    let request = f.request(&with(&bin, &["-C", "link-arg=-fuse-ld=lld"]), &[]);
    let refused = f.base_of(request).await;
    assert!(refused.unwrap_err().to_string().contains("another linker"));
}

/// cargo's `rustc -vV` before a build starts probing the default linker, so the build's
/// first link finds it probed, although cargo runs its compiles with another
/// `LD_LIBRARY_PATH` than its probes (one that changes no library the driver loads).
#[tokio::test]
async fn a_version_probe_probes_the_default_linker_ahead() {
    let f = fixture();
    // A dynamically linked driver (this test's own binary, never run: the mock answers),
    // so that the loader is asked what each LD_LIBRARY_PATH changes.
    let cc = f.dir.path().join("bin/cc");
    std::fs::remove_file(&cc).unwrap();
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &cc).unwrap();
    let runs = |traces: bool| {
        f.mock
            .calls()
            .iter()
            .filter(|c| c.program == cc)
            .filter(|c| c.env_var("LD_TRACE_LOADED_OBJECTS").is_some() == traces)
            .count()
    };
    f.run(
        &["-vV".to_owned()],
        &[("LD_LIBRARY_PATH", "/toolchain/lib")],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // `--version`, `-print-prog-name=ld` (the fake names none), then one run per name.
    let probe_runs = 2 + super::linker::IMPLICIT_INPUTS.len();
    while runs(false) < probe_runs && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs(false), probe_runs, "the linker was not probed ahead");
    // A link now takes the digest the probe works out (or waits for it), never probes;
    // its LD_LIBRARY_PATH costs one run of the loader's trace.
    let bin = replace(
        &replace(&lib_args(), "lib", "bin"),
        "--emit=dep-info,metadata,link",
        "--emit=dep-info,link",
    );
    let compile_env = [("LD_LIBRARY_PATH", "/work/target/debug/deps:/toolchain/lib")];
    f.base(&bin, &compile_env).await;
    assert_eq!(runs(false), probe_runs, "the link probed the linker again");
    assert_eq!(runs(true), 2);
}

#[tokio::test]
async fn a_miss_runs_rustc_once_and_a_hit_never() {
    let f = fixture();
    let args = lib_args();
    let env = [
        ("GREETING", "hi"),
        (
            "CARGO_MAKEFLAGS",
            "-j --jobserver-fds=991,992 --jobserver-auth=991,992",
        ),
    ];
    let (outcome, responses) = f.run(&args, &env).await;
    assert_eq!(outcome, Outcome::Miss);
    assert_eq!(f.rustc_runs(), 1);
    let call = f
        .mock
        .calls()
        .into_iter()
        .find(|c| c.program.ends_with("rustc"))
        .unwrap();
    assert_eq!(
        call.args,
        args.iter().map(OsString::from).collect::<Vec<_>>()
    );
    assert_eq!(call.cwd, f.work);
    let [r, w] = [call.inherit_fds[0], call.inherit_fds[1]];
    assert_ne!(call.inherit_fds, f.jobserver.fds().to_vec());
    for var in JOBSERVER_VARS {
        let value = call.env_var(var).unwrap().to_string_lossy().into_owned();
        assert!(
            value.contains(&format!("--jobserver-auth={r},{w}")) && !value.contains("=991,992"),
            "{var}={value}"
        );
    }
    assert!(matches!(
        responses.last(),
        Some(Response::Finished(Exit::Code(0)))
    ));

    for file in std::fs::read_dir(f.work.join("target")).unwrap() {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    let (outcome, responses) = f.run(&args, &env).await;
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(f.rustc_runs(), 1, "a hit runs no rustc");
    assert_eq!(
        std::fs::read(f.work.join("target/libfoo-abc.rlib")).unwrap(),
        b"RLIBpub fn f() {}"
    );
    assert!(
        f.work.join("target/libfoo-abc.rmeta").exists() && f.work.join("target/foo-abc.d").exists()
    );
    // The artifact notice is replayed, so cargo's pipelining goes on.
    let replayed: Vec<u8> = responses
        .iter()
        .filter_map(|r| {
            if let Response::Stderr(b) = r {
                Some(b.clone())
            } else {
                None
            }
        })
        .flatten()
        .collect();
    assert!(String::from_utf8_lossy(&replayed).contains("\"emit\":\"metadata\""));

    // The env var rustc read, and the source, each turn the hit into a miss.
    let (outcome, _) = f.run(&args, &[("GREETING", "hello")]).await;
    assert_eq!(outcome, Outcome::Miss);
    write_old(&f.work.join("src/lib.rs"), "pub fn g() {}");
    let (outcome, _) = f.run(&args, &env).await;
    assert_eq!(outcome, Outcome::Miss);
    assert_eq!(f.rustc_runs(), 3);
}

#[tokio::test]
async fn diagnostics_rendered_for_another_display_are_never_replayed() {
    let f = fixture();
    let env = [("GREETING", "hi")];
    let narrow = with(&lib_args(), &["--diagnostic-width=80"]);
    let wide = with(&lib_args(), &["--diagnostic-width=120"]);
    assert_ne!(display_key(&parse(&narrow)), display_key(&parse(&wide)));
    // Only artifact notices: nothing depends on the display, so the entry is shared.
    assert_eq!(f.run(&narrow, &env).await.0, Outcome::Miss);
    assert_eq!(f.run(&wide, &env).await.0, Outcome::Hit);
    // With a diagnostic, another width recompiles, and its rendering replaces the old.
    write_old(&f.work.join("src/lib.rs"), "// warn\npub fn f() {}");
    assert_eq!(f.run(&narrow, &env).await.0, Outcome::Miss);
    assert_eq!(f.run(&wide, &env).await.0, Outcome::Miss);
    let (outcome, responses) = f.run(&wide, &env).await;
    assert_eq!(outcome, Outcome::Hit);
    assert!(
        responses.contains(&Response::Stderr(
            [
                DIAGNOSTIC_120.as_bytes(),
                notice_for(&f, "foo", "-abc").as_bytes()
            ]
            .concat()
        ))
    );
    assert_eq!(f.run(&narrow, &env).await.0, Outcome::Miss);
    assert!(!has_diagnostics(notice_for(&f, "foo", "-abc").as_bytes()));
}

const DIAGNOSTIC_120: &str =
    "{\"$message_type\":\"diagnostic\",\"rendered\":\"warning at width 120\"}\n";

fn notice_for(f: &Fixture, name: &str, extra: &str) -> String {
    format!(
        "{{\"$message_type\":\"artifact\",\"artifact\":\"{}/lib{name}{extra}.rmeta\",\"emit\":\"metadata\"}}\n",
        f.work.join("target").display()
    )
}

fn parse(args: &[String]) -> RustcArgs {
    let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
    match args::parse(&args::ParseInput {
        args: &argv,
        cwd: Path::new("/"),
    }) {
        args::Parsed::Cacheable(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn output_names_follow_rustc_on_linux() {
    let mut args = parse(&lib_args());
    assert_eq!(
        output_names(&args),
        ["foo-abc.d", "libfoo-abc.rmeta", "libfoo-abc.rlib"]
    );
    args.crate_types = vec![CrateType::Bin];
    args.emit = vec![Emit::DepInfo, Emit::Link];
    assert_eq!(output_names(&args), ["foo-abc.d", "foo-abc"]);
    args.crate_types = vec![CrateType::ProcMacro];
    assert_eq!(output_names(&args), ["foo-abc.d", "libfoo-abc.so"]);
    args.crate_types = vec![CrateType::Cdylib, CrateType::Rlib, CrateType::Staticlib];
    assert_eq!(
        output_names(&args),
        [
            "foo-abc.d",
            "libfoo-abc.so",
            "libfoo-abc.rlib",
            "libfoo-abc.a"
        ]
    );
}

impl Fixture {
    /// The base key of `args` run in checkout `cwd` with base dirs `bases`; `{}` in an
    /// argument or env value is the cwd.
    async fn based(
        &self,
        cwd: &Path,
        bases: &[&Path],
        args: &[String],
        env: &[(&str, &str)],
    ) -> CacheKey {
        let fill = |s: &str| s.replace("{}", &cwd.display().to_string());
        let args: Vec<String> = args.iter().map(|a| fill(a)).collect();
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), fill(v))).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut request = self.request(&args, &env);
        request.cwd = to_bytes(cwd.as_os_str());
        request.base_dirs = bases.iter().map(|b| to_bytes(b.as_os_str())).collect();
        self.base_of(request).await.unwrap().0
    }
}

#[tokio::test]
async fn base_dirs_share_rustc_keys_only_where_a_remap_covers_the_checkout() {
    let f = fixture();
    let checkouts = ["one", "two"].map(|n| f.dir.path().join(n).join("ws"));
    for c in &checkouts {
        std::fs::create_dir_all(c.join("src")).unwrap();
        std::fs::create_dir_all(c.join("deps")).unwrap();
        write_old(&c.join("src/lib.rs"), "pub fn f() {}");
        std::fs::write(c.join("deps/libdep-1.rlib"), "dep v1").unwrap();
    }
    let with = |extra: &[&str]| {
        let mut args: Vec<String> = lib_args()
            .into_iter()
            .map(|a| {
                if a == "target" {
                    "{}/target/debug/deps".into()
                } else {
                    a
                }
            })
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let env = [("CARGO_MANIFEST_DIR", "{}")];
    let key = |i: usize, args: Vec<String>, based: bool| {
        let cwd = checkouts[i].clone();
        let parent = cwd.parent().unwrap().to_path_buf();
        let f = &f;
        async move {
            let bases: Vec<&Path> = if based { vec![&parent] } else { vec![] };
            f.based(&cwd, &bases, &args, &env).await
        }
    };
    let remap = with(&["--remap-path-prefix", "{}=/ws"]);
    assert_eq!(
        key(0, remap.clone(), true).await,
        key(1, remap.clone(), true).await
    );
    // Joined spelling too.
    let joined = with(&["--remap-path-prefix={}=/ws"]);
    assert_eq!(
        key(0, joined.clone(), true).await,
        key(1, joined, true).await
    );
    // Without base dirs nothing changes.
    assert_ne!(
        key(0, remap.clone(), false).await,
        key(1, remap, false).await
    );
    // Without a remap rustc embeds the absolute cwd: keep it.
    assert_ne!(key(0, with(&[]), true).await, key(1, with(&[]), true).await);
    // A remap to different places is a different rlib.
    assert_ne!(
        key(0, with(&["--remap-path-prefix", "{}=/ws"]), true).await,
        key(1, with(&["--remap-path-prefix", "{}=/other"]), true).await
    );
    // A remap of a directory above the base dirs leaves it literal (and the keys apart).
    let above = format!("{}=/x", f.dir.path().display());
    assert_ne!(
        key(0, with(&["--remap-path-prefix", &above]), true).await,
        key(1, with(&["--remap-path-prefix", &above]), true).await
    );
}

#[test]
fn a_moved_out_dir_is_rewritten_in_dep_info_but_not_in_env_deps() {
    let old = b"/b1/ws/target/debug/deps";
    let new = Path::new("/b2/ws/target/debug/deps");
    let text = b"/b1/ws/target/debug/deps/libfoo-abc.rmeta: src/lib.rs\n\nsrc/lib.rs:\n\n# env-dep:X=/b1/ws/target/debug/deps/x\n";
    assert_eq!(
        rewrite_out_dir(text, old, new),
        b"/b2/ws/target/debug/deps/libfoo-abc.rmeta: src/lib.rs\n\nsrc/lib.rs:\n\n# env-dep:X=/b1/ws/target/debug/deps/x\n".to_vec()
    );
    assert!(plain_path(b"/home/ci/work/p-1/target_x/debug"));
    assert!(!plain_path(b"/home/my dir/target"));
    assert!(!plain_path(b"/a#b"));
}

#[tokio::test]
async fn a_source_stamped_after_the_compile_started_is_not_stored() {
    let f = fixture();
    // Stamped later than the compile's start: it may have changed while rustc read it.
    let source = f.work.join("src/lib.rs");
    std::fs::write(&source, "pub fn fresh() {}").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&source)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let args = lib_args();
    assert_eq!(f.run(&args, &[]).await.0, Outcome::Miss);
    assert_eq!(f.run(&args, &[]).await.0, Outcome::Miss);
    assert_eq!(f.rustc_runs(), 2);
    let stats = f.service.context.stats.counters();
    assert_eq!(stats.not_stored.get("too new to trust"), Some(&2));
}

#[tokio::test]
async fn an_extern_that_cannot_be_hashed_is_refused_with_the_os_reason() {
    let f = fixture();
    let args: Vec<String> = lib_args()
        .into_iter()
        .map(|a| a.replace("deps/libdep-1.rlib", "deps/libgone-1.rlib"))
        .collect();
    let refused = f.base_of(f.request(&args, &[])).await.unwrap_err();
    assert!(matches!(refused, NotCacheable::Input { .. }), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        format!(
            "extern dep: {}: No such file or directory (os error 2)",
            f.work.join("deps/libgone-1.rlib").display()
        )
    );
}
