use super::*;

const SERVER: u32 = 100;

fn env(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

/// A gcc compile as the interposer logs it: the driver, then cc1 and as by vfork + exec.
const GCC_LOG: &str = "\
P 200 100
S /usr/bin/gcc
e GCC_EXEC_PREFIX
E LANG=C
X 201 /usr/lib/gcc/x86_64-linux-gnu/12/cc1
P 201 200
R /w/t.c
M /w/opt.h
M /usr/include/opt.h
R /w/test.h
M /w/test.h.gch
R /usr/include/stdio.h
W /tmp/ccAbc.s
E COLLECT_GCC_OPTIONS='-c'
e COLLECT_GCC_OPTIONS
X 202 /usr/bin/as
P 202 200
R /tmp/ccAbc.s
R /w/data\\nbin
M /w/t.o
W /w/t.o
K /w/tmpdir
R /w/tmpdir/scratch
R /proc/self/maps
";

#[test]
fn a_gcc_log_parses_into_what_was_read_looked_for_and_written() {
    let log = Log::parse(GCC_LOG.as_bytes());
    assert_eq!(log.malformed, 0);
    assert_eq!(log.loaded, vec![(200, 100), (201, 200), (202, 200)]);
    assert!(
        log.read.contains(b"/w/data\nbin".as_slice()),
        "escaped newline"
    );
    assert!(log.found.contains(b"/usr/bin/gcc".as_slice()));
    assert!(log.complete(SERVER).is_ok());
    let inputs = log.inputs(
        &[Path::new("/w/t.o")],
        Path::new("/w"),
        &env(&[("LANG", "C"), ("PATH", "/usr/bin")]),
    );
    let paths = |list: &[PathBuf]| -> Vec<String> {
        list.iter().map(|p| p.display().to_string()).collect()
    };
    // Directories are left out by looking at the disk; none of these paths exist here.
    assert_eq!(
        paths(&inputs.files),
        [
            "/usr/include/stdio.h",
            "/w/data\nbin",
            "/w/t.c",
            "/w/test.h"
        ]
    );
    assert_eq!(paths(&inputs.found), ["/usr/bin/gcc"]);
    // /w does not exist here: one absent path stands for every lookup under it.
    assert_eq!(paths(&inputs.absent), ["/usr/include/opt.h", "/w"]);
    assert_eq!(
        paths(&inputs.programs),
        ["/usr/bin/as", "/usr/lib/gcc/x86_64-linux-gnu/12/cc1"]
    );
    // COLLECT_GCC_OPTIONS was read unset (as in the request) and also with the value the
    // driver set: only the request's side is an input.
    assert_eq!(
        inputs.env,
        vec![
            (b"COLLECT_GCC_OPTIONS".to_vec(), None),
            (b"GCC_EXEC_PREFIX".to_vec(), None),
            (b"LANG".to_vec(), Some(b"C".to_vec())),
        ]
    );
}

#[test]
fn a_program_that_did_not_load_the_interposer_makes_the_log_incomplete() {
    // cc1 was exec'd but never said it loaded (static, or LD_PRELOAD cleared).
    let log = Log::parse(b"P 200 100\nX 201 /opt/static/cc1\nR /w/t.c\n");
    let why = log.complete(SERVER).unwrap_err();
    assert!(why.to_string().contains("/opt/static/cc1"), "{why}");

    // A wrapper script that execs the compiler in its own process: that exec must be
    // followed by a second load of the same pid.
    let log = Log::parse(b"P 200 100\nX 200 /usr/bin/gcc\n");
    assert!(log.complete(SERVER).is_err());
    let log = Log::parse(b"P 200 100\nX 200 /usr/bin/gcc\nP 200 100\n");
    assert!(log.complete(SERVER).is_ok());

    // Nothing loaded at all.
    assert!(Log::parse(b"").complete(SERVER).is_err());
}

#[test]
fn a_failed_exec_is_cancelled() {
    // execvp tried a name that does not exist, then the real program.
    let log = Log::parse(b"P 200 100\nX 201 nosuch\nx 201\nX 201 /usr/bin/as\nP 201 200\n");
    assert_eq!(log.execs, vec![(201, b"/usr/bin/as".to_vec())]);
    assert!(log.complete(SERVER).is_ok());
}

#[test]
fn malformed_lines_are_counted_and_skipped() {
    let log =
        Log::parse(b"P 200 100\nR relative/path\nQ what\nR /ok\nE NOEQUALS\nR /bad\\q\nP x\n");
    assert_eq!(log.malformed, 5);
    assert_eq!(log.read.len(), 1);
}

#[test]
fn variables_handled_elsewhere_are_not_inputs() {
    let log =
        Log::parse(b"P 200 100\nE PATH=/usr/bin\nE TMPDIR=/tmp\nE MY_LEVEL=debug\ne UNSET_ONE\n");
    let inputs = log.inputs(
        &[],
        Path::new("/w"),
        &env(&[
            ("PATH", "/usr/bin"),
            ("TMPDIR", "/tmp"),
            ("MY_LEVEL", "debug"),
        ]),
    );
    assert_eq!(
        inputs.env,
        vec![
            (b"MY_LEVEL".to_vec(), Some(b"debug".to_vec())),
            (b"UNSET_ONE".to_vec(), None),
        ]
    );
}

#[test]
fn pwd_naming_the_cwd_is_keyed_as_the_cwd() {
    let log = Log::parse(b"P 200 100\nE PWD=/w\n");
    let inputs = log.inputs(&[], Path::new("/w"), &env(&[("PWD", "/w")]));
    assert_eq!(inputs.env, vec![(b"PWD".to_vec(), Some(CWD_MARK.to_vec()))]);
    // Another checkout, with its own PWD naming its own cwd, matches.
    let elsewhere = env(&[("PWD", "/other")]);
    assert!(env_matches(
        b"PWD",
        Some(CWD_MARK),
        Path::new("/other"),
        &elsewhere
    ));
    assert!(!env_matches(
        b"PWD",
        Some(CWD_MARK),
        Path::new("/w"),
        &elsewhere
    ));
}

#[test]
fn pwd_is_keyed_by_what_it_means_for_the_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("real");
    std::fs::create_dir(&cwd).unwrap();
    std::os::unix::fs::symlink(&cwd, dir.path().join("link")).unwrap();
    let top = dir.path().to_str().unwrap().to_owned();
    let link = format!("{top}/link");
    let keyed = |pwd: &str| {
        let log = Log::parse(format!("P 200 100\nE PWD={pwd}\n").as_bytes());
        log.inputs(&[], &cwd, &env(&[("PWD", pwd)])).env[0]
            .1
            .clone()
    };
    // Another directory (make -C from the top): it does not matter which.
    assert_eq!(keyed(&top), Some(ELSEWHERE_MARK.to_vec()));
    assert!(env_matches(
        b"PWD",
        Some(ELSEWHERE_MARK),
        &cwd,
        &env(&[("PWD", "/")])
    ));
    assert!(!env_matches(
        b"PWD",
        Some(ELSEWHERE_MARK),
        &cwd,
        &env(&[("PWD", &link)])
    ));
    // A symlinked spelling of the cwd is what gcc records: keyed as it is.
    assert_eq!(keyed(&link), Some(link.clone().into_bytes()));
}

#[test]
fn a_program_run_by_name_is_found_on_the_requests_path() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("as"), b"assembler").unwrap();
    let log = Log::parse(b"P 200 100\nX 201 as\nP 201 200\n");
    let path = bin.to_str().unwrap();
    let inputs = log.inputs(&[], Path::new("/w"), &env(&[("PATH", path)]));
    assert_eq!(inputs.programs, vec![bin.join("as")]);
}

#[test]
fn lookups_under_a_missing_directory_are_one_absent_path() {
    let dir = tempfile::tempdir().unwrap();
    let inc = dir.path().join("include");
    std::fs::create_dir(&inc).unwrap();
    let text = format!(
        "P 200 100\nM {0}/include/stdio.h\nM {0}/missing/bits/a.h\nM {0}/missing/bits/b.h\nM {0}/missing/c.h\n",
        dir.path().display()
    );
    let inputs = Log::parse(text.as_bytes()).inputs(&[], Path::new("/w"), &[]);
    assert_eq!(
        inputs.absent,
        vec![inc.join("stdio.h"), dir.path().join("missing")]
    );
}
