//! The compile pipeline against the mock process seam: exact command lines, hit/miss logic.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cachet_jobserver::Jobserver;

use super::*;

pub(crate) mod support;
use crate::cache::{DiskCache, DiskStorage};
use crate::process::mock::{MockRunner, output};
use crate::process::{CommandSpec, JOBSERVER_VARS, ProcessOutput};
use crate::protocol::{CompileRequest, Exit, Response};
use support as test_support;

const GCC_MACROS: &[u8] = b"#define __GNUC__ 12\n#define __VERSION__ \"12.2.0\"\n";

/// A fake gcc: answers the probe, "preprocesses" by echoing the source, and "compiles" by
/// writing the object named by -o.
fn fake_gcc(spec: &CommandSpec) -> io::Result<ProcessOutput> {
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.iter().any(|a| a == "-dM") {
        return Ok(output(0, GCC_MACROS, b""));
    }
    let input = args.iter().find(|a| a.ends_with(".c")).unwrap();
    let source = std::fs::read(spec.cwd.join(input))?;
    // Observed: log what the interposer would (this process plays the server's child).
    if let Some(log) = spec.env_var("CACHET_OBSERVE_LOG") {
        let records = format!(
            "P 1 {}\nR {}\n",
            std::process::id(),
            spec.cwd.join(input).display()
        );
        std::fs::write(log, records)?;
    }
    if args.iter().any(|a| a == "-E") {
        return Ok(output(0, &source, b""));
    }
    // -MD -MF FILE: the dependency list, as gcc writes it.
    if let Some(at) = args.iter().position(|a| a == "-MF") {
        std::fs::write(spec.cwd.join(&args[at + 1]), format!("a.o: {input}\n"))?;
    }
    let at = args.iter().position(|a| a == "-o").unwrap();
    std::fs::write(
        spec.cwd.join(&args[at + 1]),
        [b"OBJ:".as_slice(), &source].concat(),
    )?;
    if source.starts_with(b"error") {
        return Ok(output(1, b"", b"a.c:1: error: nope\n"));
    }
    if args.iter().any(|a| a == "-fdiagnostics-color=always") {
        return Ok(output(
            0,
            b"",
            b"\x1b[01m\x1b[Ka.c:1:\x1b[m\x1b[K warning: unused\n",
        ));
    }
    Ok(output(0, b"", b"a.c:1: warning: unused\n"))
}

/// Writes a source stamped a while ago: a file modified as the compile starts is not
/// trusted in a manifest.
fn write_old(path: &std::path::Path, text: impl AsRef<[u8]>) -> io::Result<()> {
    std::fs::write(path, text)?;
    let old = std::time::SystemTime::now() - Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(old)
}

struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    compiler: PathBuf,
    mock: MockRunner,
    launcher: Launcher,
    service: CompileService,
    stats: Arc<Stats>,
    cache: Arc<Cache>,
    jobserver: Jobserver,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let compiler = dir.path().join("gcc");
    std::fs::write(&compiler, b"#!/bin/false\n").unwrap();
    let mock = MockRunner::new(fake_gcc);
    let jobserver = Jobserver::new(2).unwrap();
    let stats = Arc::new(Stats::default());
    let disk = Arc::new(DiskCache::new(dir.path().join("cache"), 1 << 30));
    let cache = Arc::new(Cache::new(Arc::new(DiskStorage::new(disk)), stats.clone()));
    let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
    let interposer = observe::Interposer::for_tests(&dir.path().join("observe.so"), dir.path());
    let service = CompileService::new(launcher.clone(), cache.clone(), stats.clone())
        .with_interposer(Some(interposer));
    Fixture {
        _dir: dir,
        work,
        compiler,
        mock,
        launcher,
        service,
        stats,
        cache,
        jobserver,
    }
}

impl Fixture {
    /// A request in preprocessor mode (most tests here are about it).
    fn request(&self, args: &[&str], env: &[(&str, &str)]) -> CompileRequest {
        let mut env = env.to_vec();
        env.push(("CACHET_DIRECT_MODE", "0"));
        self.direct_request(args, &env)
    }

    fn direct_request(&self, args: &[&str], env: &[(&str, &str)]) -> CompileRequest {
        test_support::request(&self.compiler, &self.work, args, env)
    }

    async fn run(&self, request: CompileRequest) -> (Outcome, Vec<Response>) {
        let (job, rx) = test_support::job(&self.launcher, request);
        let outcome = self.service.compile(job).await;
        let responses = test_support::responses(rx, &outcome);
        (outcome, responses)
    }

    fn compiles(&self) -> Vec<CommandSpec> {
        self.mock
            .calls()
            .into_iter()
            .filter(|c| !c.args.iter().any(|a| a == "-dM"))
            .collect()
    }
}

#[tokio::test]
async fn miss_runs_preprocessor_and_compiler_with_exact_command_lines() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    let env = [
        ("PATH", "/usr/bin"),
        ("LANG", "C"),
        ("MAKEFLAGS", " -j8 --jobserver-auth=993,994"),
        (
            "CARGO_MAKEFLAGS",
            "-j --jobserver-fds=997,998 --jobserver-auth=997,998",
        ),
    ];
    let (outcome, responses) = f
        .run(f.request(&["-c", "a.c", "-o", "a.o", "-O2"], &env))
        .await;
    assert_eq!(outcome, Outcome::Miss);
    assert_eq!(
        responses,
        vec![
            Response::Stderr(b"a.c:1: warning: unused\n".to_vec()),
            Response::Finished(Exit::Code(0))
        ]
    );

    let calls = f.compiles();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let (pre, compile) = (&calls[0], &calls[1]);
    for call in [pre, compile] {
        assert_eq!(call.program, f.compiler);
        assert_eq!(call.cwd, f.work);
        assert_eq!(call.env_var("PATH").unwrap(), "/usr/bin");
        assert_eq!(call.env_var("LANG").unwrap(), "C");
        // A proxy pipe of the server's, neither the client's pool nor the server's own.
        let [r, w] = [call.inherit_fds[0], call.inherit_fds[1]];
        assert_ne!(call.inherit_fds, f.jobserver.fds().to_vec());
        for var in JOBSERVER_VARS {
            let value = call.env_var(var).unwrap().to_str().unwrap();
            assert!(
                value.contains(&format!("--jobserver-auth={r},{w}")),
                "{var}={value}"
            );
            assert!(
                !value.contains("=993,994") && !value.contains("=997,998"),
                "{var}={value}"
            );
        }
        assert_eq!(call.inherit_fds.len(), 2);
    }
    let mut pre_args: Vec<&str> = pre.args.iter().map(|a| a.to_str().unwrap()).collect();
    pre_args.sort_unstable();
    assert_eq!(pre_args, ["-E", "-O2", "-fdiagnostics-color=always", "a.c"]);
    // Colour is left to the terminal: the compile runs coloured (see `colour`).
    assert_eq!(
        compile.args,
        [
            "-fdiagnostics-color=always",
            "-c",
            "a.c",
            "-o",
            "a.o",
            "-O2"
        ]
    );
    assert_eq!(compile.umask, Some(0o022));

    assert_eq!(f.cache.pending().drain(Duration::from_secs(10)).await, 0);
    std::fs::remove_file(f.work.join("a.o")).unwrap();
    let (outcome, responses) = f
        .run(f.request(&["-c", "a.c", "-o", "a.o", "-O2"], &env))
        .await;
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(
        responses,
        vec![
            Response::Stderr(b"a.c:1: warning: unused\n".to_vec()),
            Response::Finished(Exit::Code(0))
        ]
    );
    assert_eq!(std::fs::read(f.work.join("a.o")).unwrap(), b"OBJ:int x;\n");
    // A hit runs the preprocessor only.
    assert_eq!(f.compiles().len(), 3);
    let counters = f.stats.counters();
    assert_eq!((counters.cache_hits, counters.cache_misses), (1, 1));
    assert_eq!(f.jobserver.stats().held, 0);
}

#[tokio::test]
async fn source_args_and_locale_all_change_the_key() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    let base = ["-c", "a.c", "-o", "a.o"];
    let mut hits = Vec::new();
    for (args, env, source) in [
        (&base[..], vec![("LANG", "C")], "int x;\n"),
        (&base[..], vec![("LANG", "C")], "int x;\n"),
        (&base[..], vec![("LANG", "de_DE.UTF-8")], "int x;\n"),
        (
            &base[..],
            vec![("LANG", "C"), ("LC_MESSAGES", "fr_FR")],
            "int x;\n",
        ),
        (
            &["-c", "a.c", "-o", "a.o", "-O1"][..],
            vec![("LANG", "C")],
            "int x;\n",
        ),
        (&base[..], vec![("LANG", "C")], "int y;\n"),
    ] {
        write_old(&f.work.join("a.c"), source).unwrap();
        let (outcome, _) = f.run(f.request(args, &env)).await;
        f.cache.pending().drain(Duration::from_secs(10)).await;
        hits.push(outcome == Outcome::Hit);
    }
    assert_eq!(hits, [false, true, false, false, false, false]);
}

#[tokio::test]
async fn recache_overwrites_and_failures_are_not_cached() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    let args = ["-c", "a.c", "-o", "a.o"];
    f.run(f.request(&args, &[])).await;
    f.cache.pending().drain(Duration::from_secs(10)).await;
    let (outcome, _) = f.run(f.request(&args, &[("CACHET_RECACHE", "1")])).await;
    assert_eq!(outcome, Outcome::Miss);
    assert_eq!(f.stats.counters().forced_recaches, 1);
    f.cache.pending().drain(Duration::from_secs(10)).await;

    write_old(&f.work.join("a.c"), b"error\n").unwrap();
    for _ in 0..2 {
        let (outcome, responses) = f.run(f.request(&args, &[])).await;
        assert_eq!(outcome, Outcome::Failed(crate::process::Exit::Code(1)));
        assert_eq!(responses.last(), Some(&Response::Finished(Exit::Code(1))));
        f.cache.pending().drain(Duration::from_secs(10)).await;
    }
    assert_eq!(f.stats.counters().compile_failures, 2);
}

#[tokio::test]
async fn uncacheable_compiles_go_back_to_the_client_with_a_reason() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    let (outcome, responses) = f.run(f.request(&["a.c", "-o", "a"], &[])).await;
    let Outcome::Uncacheable(reason) = outcome else {
        panic!("{outcome:?}")
    };
    let reason = reason.to_string();
    assert!(
        matches!(&responses[..], [Response::RunLocally { .. }]),
        "{responses:?}"
    );
    assert_eq!(f.stats.counters().uncacheable.get(&reason), Some(&1));
    // Only the probe ran: nothing took a token or compiled.
    assert!(f.compiles().is_empty());

    let (outcome, _) = f
        .run(f.request(&["-c", "a.c"], &[("DEPENDENCIES_OUTPUT", "x.d")]))
        .await;
    assert_eq!(
        outcome,
        Outcome::Uncacheable(Uncacheable::C(c::reasons::NotCacheable::ExtraOutputVar(
            "DEPENDENCIES_OUTPUT"
        )))
    );
}

/// Colour left to the terminal: every compile runs coloured, and one entry serves a
/// terminal (coloured) and a pipe (colour taken out), live and replayed.
#[tokio::test]
async fn a_tty_client_and_a_pipe_share_one_entry() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    let args = ["-c", "a.c", "-o", "a.o"];
    let stderr_of = |responses: &[Response]| -> Vec<u8> {
        responses
            .iter()
            .filter_map(|r| match r {
                Response::Stderr(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let (outcome, piped) = f.run(f.request(&args, &[("TERM", "xterm")])).await;
    assert_eq!(outcome, Outcome::Miss);
    assert_eq!(stderr_of(&piped), b"a.c:1: warning: unused\n");
    assert_eq!(
        f.compiles().pop().unwrap().args[0],
        "-fdiagnostics-color=always"
    );
    f.cache.pending().drain(Duration::from_secs(10)).await;
    let mut tty = f.request(&args, &[("TERM", "xterm")]);
    tty.stderr_is_tty = true;
    let (outcome, coloured) = f.run(tty).await;
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(
        stderr_of(&coloured),
        b"\x1b[01m\x1b[Ka.c:1:\x1b[m\x1b[K warning: unused\n"
    );
    let (outcome, piped) = f.run(f.request(&args, &[("TERM", "xterm")])).await;
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(stderr_of(&piped), b"a.c:1: warning: unused\n");
}

/// Direct mode: a miss runs the compiler once, observed (no preprocessor, no extra
/// flags); a hit runs nothing at all and takes no token.
#[tokio::test]
async fn direct_mode_runs_no_preprocessor() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    // Old enough to be trusted in a manifest.
    let old = std::time::SystemTime::now() - Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(f.work.join("a.c"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let args = ["-c", "a.c", "-o", "a.o"];
    let (outcome, _) = f.run(f.direct_request(&args, &[])).await;
    assert_eq!(outcome, Outcome::Miss);
    let calls = f.compiles();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        calls[0].args,
        ["-fdiagnostics-color=always", "-c", "a.c", "-o", "a.o"]
    );
    assert_eq!(calls[0].program, f.compiler);
    assert_eq!(calls[0].cwd, f.work);
    let preload = calls[0].env_var("LD_PRELOAD").unwrap();
    assert_eq!(preload, f._dir.path().join("observe.so").as_os_str());
    let log = PathBuf::from(calls[0].env_var("CACHET_OBSERVE_LOG").unwrap());
    assert_eq!(log.parent(), Some(f._dir.path()));
    // The log is read after the client's answer, with the cache writes.
    f.cache.pending().drain(Duration::from_secs(10)).await;
    assert!(!log.exists(), "the log is removed after the compile");

    // Hold the only free token: a hit must not need one.
    let _held = (
        f.jobserver.try_acquire().unwrap(),
        f.jobserver.try_acquire().unwrap(),
    );
    std::fs::remove_file(f.work.join("a.o")).unwrap();
    let (outcome, _) = f.run(f.direct_request(&args, &[])).await;
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(f.compiles().len(), 1, "a direct hit runs nothing");
    assert_eq!(f.stats.counters().direct_hits, 1);
    assert_eq!(std::fs::read(f.work.join("a.o")).unwrap(), b"OBJ:int x;\n");
}

/// Plays a remote executor: runs every process of a compile by `fake_gcc` itself, never
/// through the launcher, and records what it was asked to run.
#[derive(Default)]
struct ScriptedExecutor {
    runs: std::sync::Mutex<Vec<CommandSpec>>,
}

#[async_trait::async_trait]
impl executor::Executor for ScriptedExecutor {
    async fn run(
        &self,
        spec: CommandSpec,
        stream: Option<tokio::sync::mpsc::UnboundedSender<crate::process::OutputChunk>>,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> io::Result<ProcessOutput> {
        self.runs.lock().unwrap().push(spec.clone());
        let out = fake_gcc(&spec)?;
        if let Some(stream) = stream {
            let _ = stream.send(crate::process::OutputChunk::Stderr(out.stderr.clone()));
        }
        Ok(out)
    }
}

#[tokio::test]
async fn every_compiler_process_of_a_miss_runs_through_the_jobs_executor() {
    let f = fixture();
    write_old(&f.work.join("a.c"), b"int x;\n").unwrap();
    let executor = Arc::new(ScriptedExecutor::default());
    let run = |request| {
        let (mut job, rx) = test_support::job(&f.launcher, request);
        job.executor = executor.clone();
        (job, rx)
    };
    let args = ["-c", "a.c", "-o", "a.o"];
    let (job, rx) = run(f.request(&args, &[("PATH", "/usr/bin")]));
    let outcome = f.service.compile(job).await;
    assert_eq!(outcome, Outcome::Miss);
    assert_eq!(
        test_support::responses(rx, &outcome),
        vec![
            Response::Stderr(b"a.c:1: warning: unused\n".to_vec()),
            Response::Finished(Exit::Code(0))
        ]
    );
    // The preprocessor and the compile went to the executor, exactly as the build asked;
    // the launcher ran only the identity probe.
    let runs = executor.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for run in &runs {
        assert_eq!(run.program, f.compiler);
        assert_eq!(run.cwd, f.work);
        assert_eq!(run.env_var("PATH").unwrap(), "/usr/bin");
    }
    assert!(runs[0].args.iter().any(|a| a == "-E"));
    let coloured = ["-fdiagnostics-color=always"].iter().chain(&args);
    assert_eq!(
        runs[1].args,
        coloured.map(std::ffi::OsString::from).collect::<Vec<_>>()
    );
    assert!(f.compiles().is_empty(), "{:#?}", f.compiles());
    f.cache.pending().drain(Duration::from_secs(10)).await;

    // A hit in preprocessor mode runs the preprocessor only, through the executor too.
    let (job, _rx) = run(f.request(&args, &[("PATH", "/usr/bin")]));
    assert_eq!(f.service.compile(job).await, Outcome::Hit);
    let runs = executor.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(runs[2].args.iter().any(|a| a == "-E"));
    assert!(f.compiles().is_empty());
}

/// Plays a compiler named rustc: rustc itself (`-vV`, `--print sysroot`) when `is_rustc`,
/// else gcc (the C probe). Anything else fails, as rustc fails the C probe.
fn named_rustc(
    dir: &std::path::Path,
    is_rustc: bool,
) -> (PathBuf, MockRunner, Launcher, CompileService) {
    let rustc = dir.join("rustc");
    write_old(&rustc, b"#!/bin/false\n").unwrap();
    let sysroot = dir.join("sysroot");
    std::fs::create_dir_all(&sysroot).unwrap();
    let mock = MockRunner::new(move |spec| {
        let first = spec.args.first().map(|a| a.to_string_lossy().into_owned());
        Ok(match (is_rustc, first.as_deref()) {
            (true, Some("-vV")) => output(
                0,
                b"rustc 1.95.0 (fake)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\n",
                b"",
            ),
            (true, Some("--print")) => {
                output(0, format!("{}\n", sysroot.display()).as_bytes(), b"")
            }
            (false, Some("-dM")) => output(0, GCC_MACROS, b""),
            _ => output(1, b"", b"error: unexpected arguments\n"),
        })
    });
    let launcher = Launcher::new(Arc::new(mock.clone()), Jobserver::new(2).unwrap());
    let stats = Arc::new(Stats::default());
    let disk = Arc::new(DiskCache::new(dir.join("cache"), 1 << 30));
    let cache = Arc::new(Cache::new(Arc::new(DiskStorage::new(disk)), stats.clone()));
    let service = CompileService::new(launcher.clone(), cache, stats);
    (rustc, mock, launcher, service)
}

/// Each family still probes the binary, but one named rustc gets rustc's probe first: the
/// C probe, an error from a rustc, is never run for it. One named rustc that answers as gcc
/// is still found out (the C probe follows a rustc probe that fails).
#[tokio::test]
async fn a_compiler_named_rustc_is_probed_as_rustc_first() {
    for is_rustc in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (rustc, mock, launcher, service) = named_rustc(dir.path(), is_rustc);
        let request = test_support::request(&rustc, dir.path(), &["-vV"], &[]);
        let (job, _rx) = test_support::job(&launcher, request);
        let outcome = service.compile(job).await;
        let probes: Vec<Vec<String>> = mock
            .calls()
            .iter()
            .map(|c| {
                c.args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            })
            .collect();
        let first = probes.first().map(|p| p[0].as_str());
        assert_eq!(first, Some("-vV"), "{probes:?}");
        let c_probed = probes.iter().any(|p| p[0] == "-dM");
        assert_eq!(c_probed, !is_rustc, "{probes:?}");
        // Either way `-vV` is not a compile to cache.
        assert!(matches!(outcome, Outcome::Uncacheable(_)), "{outcome:?}");
    }
}
