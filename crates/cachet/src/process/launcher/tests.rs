use super::*;
use crate::process::mock::{MockRunner, output};

#[tokio::test]
async fn compiler_children_get_a_server_owned_proxy_not_the_clients_pool() {
    // While the child runs, its two fds must be the ends of one live pipe of ours.
    let live_pipe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = live_pipe.clone();
    let mock = MockRunner::new(move |spec| {
        let ok = cachet_jobserver::inherited::check_pipe(spec.inherit_fds[0], spec.inherit_fds[1])
            .is_ok();
        seen.store(ok, Ordering::SeqCst);
        Ok(output(0, b"", b""))
    });
    let jobserver = Jobserver::new(2).unwrap();
    let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
    let mut spec = CommandSpec::new("/usr/bin/gcc", "/src");
    spec.args = vec!["-c".into(), "a.c".into()];
    spec.env = vec![
        ("PATH".into(), "/usr/bin".into()),
        (
            "MAKEFLAGS".into(),
            " -k -j8 --jobserver-auth=993,994".into(),
        ),
        ("MFLAGS".into(), "-k -j8 --jobserver-auth=993,994".into()),
        (
            "CARGO_MAKEFLAGS".into(),
            "-j --jobserver-fds=995,996 --jobserver-auth=995,996".into(),
        ),
    ];
    launcher
        .run_compiler(spec, None, CancellationToken::new(), None)
        .await
        .unwrap();
    assert!(
        live_pipe.load(Ordering::SeqCst),
        "the child's jobserver fds were no pipe of ours"
    );
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    let child = &calls[0];
    assert_eq!(child.program, std::path::Path::new("/usr/bin/gcc"));
    assert_eq!(child.args, ["-c", "a.c"]);
    assert_eq!(child.cwd, std::path::Path::new("/src"));
    let [r, w] = [child.inherit_fds[0], child.inherit_fds[1]];
    assert_eq!(child.inherit_fds.len(), 2);
    assert!(![993, 994, 995, 996].contains(&r) && ![993, 994, 995, 996].contains(&w));
    assert_ne!(
        child.inherit_fds,
        jobserver.fds().to_vec(),
        "the server's own pool stays private"
    );
    let ours = format!("--jobserver-auth={r},{w}");
    for var in JOBSERVER_VARS {
        let value = child.env_var(var).unwrap().to_str().unwrap();
        assert!(value.contains(&ours), "{var}={value}");
        assert!(
            !value.contains("=993,994") && !value.contains("=995,996") && !value.contains("-j8"),
            "{var}={value}"
        );
    }
    assert!(
        child
            .env_var("MAKEFLAGS")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("-k")
    );
    assert_eq!(child.env_var("PATH").unwrap(), "/usr/bin");
    assert_eq!(
        child.env.len(),
        4,
        "no other variable is added: {:?}",
        child.env
    );
    // The token came back when the child finished.
    assert_eq!(jobserver.stats().held, 0);
}

#[tokio::test]
async fn probes_take_no_token_and_get_no_jobserver() {
    let mock = MockRunner::new(|_| Ok(output(0, b"gcc 12", b"")));
    let jobserver = Jobserver::new(1).unwrap();
    let held = jobserver.acquire().await.unwrap();
    let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
    let mut spec = CommandSpec::new("/usr/bin/gcc", "/");
    spec.env = vec![("MAKEFLAGS".into(), "-j --jobserver-auth=993,994".into())];
    // Would hang if the probe waited for the only token, which we hold.
    launcher.run_probe(spec).await.unwrap();
    assert!(mock.calls()[0].env.is_empty());
    assert!(mock.calls()[0].inherit_fds.is_empty());
    drop(held);
}

#[tokio::test]
async fn cancel_while_waiting_for_a_token() {
    let mock = MockRunner::new(|_| Ok(output(0, b"", b"")));
    let jobserver = Jobserver::new(1).unwrap();
    let _held = jobserver.acquire().await.unwrap();
    let launcher = Launcher::new(Arc::new(mock.clone()), jobserver);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = launcher
        .run_compiler(CommandSpec::new("/bin/true", "/"), None, cancel, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    assert!(mock.calls().is_empty());
}

/// With remote execution the pool is wider than the machine: a local compile, a
/// passed-through run and an upload each hold one of the machine's own slots, whatever
/// pool tokens are free.
#[tokio::test]
async fn a_pool_widened_for_remote_capacity_still_runs_only_the_machines_share_here() {
    let mock = MockRunner::new(|_| Ok(output(0, b"", b"")));
    let jobserver = Jobserver::new(4).unwrap();
    let launcher = Launcher::new(Arc::new(mock.clone()), jobserver).with_local_limit(1);
    let cancel = CancellationToken::new();
    let held = launcher.local_slot(&cancel).await.unwrap();
    assert!(held.is_some());
    // The only local slot is taken: a compile waits though three pool tokens are free.
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        launcher.run_compiler(
            CommandSpec::new("/usr/bin/gcc", "/"),
            None,
            cancel.clone(),
            None,
        ),
    )
    .await;
    assert!(waiting.is_err(), "a compile ran past the local limit");
    assert!(mock.calls().is_empty());
    drop(held);
    launcher
        .run_compiler(
            CommandSpec::new("/usr/bin/gcc", "/"),
            None,
            cancel.clone(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(mock.calls().len(), 1);
    // Without a limit (no remote execution), pool tokens are the bound and no slot is held.
    let plain = Launcher::new(Arc::new(mock.clone()), Jobserver::new(1).unwrap());
    assert!(plain.local_slot(&cancel).await.unwrap().is_none());
}

fn collect(rx: &mut mpsc::UnboundedReceiver<OutputChunk>) -> Vec<OutputChunk> {
    let mut all = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        all.push(chunk);
    }
    all
}

#[test]
fn a_retry_repeats_nothing_the_client_has_and_the_killed_attempts_tail_is_dropped() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stream = Some(tx);
    let mut out = Forwarded::default();
    out.pass(OutputChunk::Stderr(b"warning: a\n".to_vec()), &stream);
    // The OOM killer struck: what follows is held.
    out.holding = true;
    out.pass(
        OutputChunk::Stderr(b"fatal error: Killed signal\n".to_vec()),
        &stream,
    );
    assert_eq!(
        collect(&mut rx),
        [OutputChunk::Stderr(b"warning: a\n".to_vec())]
    );
    out.retry();
    out.pass(OutputChunk::Started(7), &stream);
    out.pass(OutputChunk::Stderr(b"warn".to_vec()), &stream);
    out.pass(
        OutputChunk::Stderr(b"ing: a\nwarning: b\n".to_vec()),
        &stream,
    );
    out.pass(OutputChunk::Stdout(b"done\n".to_vec()), &stream);
    out.flush(&stream);
    assert_eq!(
        collect(&mut rx),
        [
            OutputChunk::Started(7),
            OutputChunk::Stderr(b"warning: b\n".to_vec()),
            OutputChunk::Stdout(b"done\n".to_vec()),
        ]
    );
}

#[test]
fn a_retry_that_prints_something_else_is_passed_from_where_it_differs() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stream = Some(tx);
    let mut out = Forwarded::default();
    out.pass(OutputChunk::Stderr(b"abc".to_vec()), &stream);
    out.retry();
    out.pass(OutputChunk::Stderr(b"abX".to_vec()), &stream);
    out.pass(OutputChunk::Stderr(b"abc".to_vec()), &stream);
    out.flush(&stream);
    assert_eq!(
        collect(&mut rx)[1..],
        [
            OutputChunk::Stderr(b"X".to_vec()),
            OutputChunk::Stderr(b"abc".to_vec())
        ]
    );
}

#[tokio::test]
async fn every_compiler_is_the_oom_killers_first_choice_and_a_probe_is_left_alone() {
    let mock = MockRunner::new(|_| Ok(output(0, b"", b"")));
    let launcher = Launcher::new(Arc::new(mock.clone()), Jobserver::new(1).unwrap());
    let spec = CommandSpec::new("/usr/bin/gcc", "/src");
    launcher
        .run_compiler(spec.clone(), None, CancellationToken::new(), None)
        .await
        .unwrap();
    launcher.run_probe(spec).await.unwrap();
    let calls = mock.calls();
    assert_eq!(calls[0].oom_score_adj, Some(COMPILER_OOM_SCORE_ADJ));
    assert_eq!(calls[0].cgroup_procs, None, "no memory admission, no group");
    assert_eq!(calls[1].oom_score_adj, None);
}
