use super::*;

fn recipe(args: &[&str]) -> Recipe {
    Recipe {
        language: "C".into(),
        slot: "a.o from a.c".into(),
        compiler: "gcc 12.2.0".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: "/w".into(),
        outputs: vec!["/w/a.o".into()],
        ..Recipe::default()
    }
}

#[test]
fn first_then_changed_then_evicted_then_forced() {
    let dir = tempfile::tempdir().unwrap();
    let e = Explainer::new(Some(dir.path().to_owned()), Masker::new([1; 32]));
    e.record_miss(recipe(&["-O2"]), false, true, None, &[]);
    e.record_miss(recipe(&["-O3"]), false, true, None, &[]);
    e.record_miss(recipe(&["-O3"]), false, true, None, &[]);
    e.record_miss(recipe(&["-O3"]), true, true, None, &[]);
    let causes: Vec<Vec<String>> = e.last(10).into_iter().map(|x| x.causes).collect();
    assert_eq!(causes[0], ["first compile of this output"]);
    assert_eq!(causes[1], ["argument changed: -O2 → -O3"]);
    assert!(
        causes[2][0].starts_with("entry was evicted"),
        "{:?}",
        causes[2]
    );
    assert_eq!(causes[3], ["recompiled as asked (CACHET_RECACHE)"]);
    e.record_miss(
        recipe(&["-O3"]),
        false,
        true,
        None,
        &["redis: 3 timeouts".into()],
    );
    assert_eq!(
        e.last(1)[0].causes,
        ["remote level errors (redis: 3 timeouts)"]
    );
    assert_eq!(e.last(1).len(), 1);
}

#[test]
fn an_output_is_explained_after_the_server_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let e = Explainer::new(Some(dir.path().to_owned()), Masker::new([1; 32]));
    e.record_miss(recipe(&["-O2"]), false, true, None, &[]);
    e.record_miss(recipe(&["-O2", "-g"]), false, false, None, &[]);
    // A miss not stored leaves the slot's recipe as it was.
    e.record_miss(recipe(&["-O2", "-g"]), false, true, None, &[]);
    let again = Explainer::new(Some(dir.path().to_owned()), Masker::new([1; 32]));
    let found = again.for_output(Path::new("/w/a.o")).unwrap();
    assert_eq!(found.causes, ["argument added: -g"]);
    assert!(again.for_output(Path::new("/w/b.o")).is_none());
    again.record_uncacheable(
        "C",
        "gcc a.o -o app",
        vec!["/w/app".into()],
        "linking (no -c)",
    );
    assert_eq!(
        again.for_output(Path::new("/w/app")).unwrap().causes,
        ["uncacheable: linking (no -c)"]
    );
}

#[test]
fn the_local_key_is_made_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let key = local_key(dir.path()).unwrap();
    assert_eq!(local_key(dir.path()).unwrap(), key);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
