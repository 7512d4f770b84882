//! Key and plan details for gcc and clang.

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
    }
}

fn key_in(cwd: &Path, args: &[&str]) -> CacheKey {
    let id = identity(Family::Gcc);
    let req = request(cwd, args);
    let plan = plan(&id, &req).unwrap();
    key(&id, &plan, &req, b"source")
}

#[test]
fn the_cwd_matters_only_with_unmapped_debug_info() {
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
    let map_one = format!("-fdebug-prefix-map={}=.", one.display());
    let map_two = format!("-fdebug-prefix-map={}=.", two.display());
    // The flag itself differs here, so compare each against its own unmapped twin instead.
    let id = identity(Family::Gcc);
    let req = request(&one, &["-c", "a.c", "-g", &map_one]);
    let p = plan(&id, &req).unwrap();
    assert!(cwd_is_remapped(&one, &p.args.prefix_maps));
    let req = request(&one, &["-c", "a.c", "-g", &map_two]);
    let p = plan(&id, &req).unwrap();
    assert!(!cwd_is_remapped(&one, &p.args.prefix_maps));
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
