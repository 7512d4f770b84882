//! Key and plan details for gcc and clang.

use std::path::Path;

use super::*;
use crate::protocol::to_bytes;

fn identity(family: Family) -> Identity {
    Identity {
        family,
        version: "12".into(),
        digest: [7; 32],
    }
}

fn request(cwd: &Path, args: &[&str]) -> CompileRequest {
    CompileRequest {
        compiler: b"/usr/bin/gcc".to_vec(),
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: to_bytes(cwd.as_os_str()),
        env: vec![],
        umask: 0o022,
        stderr_is_tty: false,
        build_jobserver: None,
        stale_jobserver: None,
    }
}

fn key_in(cwd: &Path, args: &[&str]) -> CacheKey {
    let id = identity(Family::Gcc);
    let req = request(cwd, args);
    let plan = plan(&id, &req).unwrap();
    key(&id, &plan, &req, b"source")
}

#[test]
fn the_cwd_matters_only_with_debug_info_and_as_remapped() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    for d in [&one, &two] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("a.c"), "int x;").unwrap();
    }
    assert_eq!(key_in(&one, &["-c", "a.c"]), key_in(&two, &["-c", "a.c"]));
    assert_ne!(
        key_in(&one, &["-c", "a.c", "-g"]),
        key_in(&two, &["-c", "a.c", "-g"])
    );
    let root = format!("-fdebug-prefix-map={}=/src", dir.path().display());
    // A map of the common parent still leaves /src/one and /src/two apart.
    assert_ne!(
        key_in(&one, &["-c", "a.c", "-g", &root]),
        key_in(&two, &["-c", "a.c", "-g", &root])
    );

    assert_eq!(
        recorded_cwds(b"/tmp/p1/x", &[]),
        vec![b"/tmp/p1/x".to_vec()]
    );
    let maps = vec![
        ("/tmp".to_owned(), "/R".to_owned()),
        ("/tmp/p1".to_owned(), "/S".to_owned()),
    ];
    assert_eq!(
        recorded_cwds(b"/tmp/p1/x", &maps),
        vec![b"/R/p1/x".to_vec(), b"/S/x".to_vec()]
    );
    assert_eq!(recorded_cwds(b"/srv", &maps), vec![b"/srv".to_vec()]);
}

#[test]
fn the_driver_name_is_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int x;").unwrap();
    let id = identity(Family::Clang);
    let mut req = request(dir.path(), &["-c", "a.c"]);
    let p = plan(&id, &req).unwrap();
    let as_c = key(&id, &p, &req, b"source");
    req.compiler = b"/usr/bin/clang++".to_vec();
    assert_ne!(as_c, key(&id, &p, &req, b"source"));
}

#[test]
fn the_dependency_target_is_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int x;").unwrap();
    let cwd = dir.path();
    assert_eq!(
        key_in(cwd, &["-c", "a.c", "-o", "x.o"]),
        key_in(cwd, &["-c", "a.c", "-o", "y.o"])
    );
    assert_ne!(
        key_in(cwd, &["-c", "a.c", "-o", "x.o", "-MD"]),
        key_in(cwd, &["-c", "a.c", "-o", "y.o", "-MD"])
    );
    assert_eq!(
        key_in(cwd, &["-c", "a.c", "-o", "x.o", "-MD", "-MT", "t"]),
        key_in(cwd, &["-c", "a.c", "-o", "x.o", "-MD", "-MT", "t"])
    );
}

#[test]
fn plans_absolute_outputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.c"), "int x;").unwrap();
    let req = request(dir.path(), &["-c", "src/a.c", "-o", "obj/a.o", "-MMD"]);
    let p = plan(&identity(Family::Clang), &req).unwrap();
    assert_eq!(p.object, dir.path().join("obj/a.o"));
    assert_eq!(p.depfile, Some(dir.path().join("obj/a.d")));
    assert_eq!(p.color_flag, None);
}
