use super::*;
use crate::reapi::digest_of;

fn execution(platform: &[(&str, &str)]) -> Execution {
    Execution::new(&Settings {
        target: Target {
            endpoint: "grpc://127.0.0.1:1".into(),
            headers: Vec::new(),
            ca_file: None,
            timeout: Duration::from_secs(5),
        },
        instance_name: "main".into(),
        platform: platform
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_in_flight: 2,
        timeout: Duration::from_secs(90),
        breaker: None,
    })
    .unwrap()
}

fn request() -> Request {
    Request {
        arguments: vec!["/usr/bin/gcc".into(), "-c".into(), "a.c".into()],
        env: vec![
            ("PWD".into(), "/src/build".into()),
            ("LANG".into(), "C".into()),
            ("PATH".into(), "/usr/bin".into()),
        ],
        cwd: PathBuf::from("/src/build"),
        outputs: vec!["out/a.o".into(), "a.d".into()],
        inputs: vec![(
            PathBuf::from("/src/build/a.c"),
            TreeFile {
                digest: digest_of(b"int a;"),
                executable: false,
            },
        )],
        dirs: vec![PathBuf::from("/tmp")],
    }
}

fn decode<M: prost::Message + Default>(blobs: &[(Digest, PathOrBytes)], digest: &Digest) -> M {
    let bytes = blobs
        .iter()
        .find_map(|(d, b)| match b {
            PathOrBytes::Bytes(bytes) if d == digest => Some(bytes.clone()),
            _ => None,
        })
        .expect("the blob is among the uploads");
    M::decode(bytes.as_slice()).unwrap()
}

#[test]
fn an_action_names_its_command_root_platform_and_deadline_as_the_protocol_wants() {
    let execution = execution(&[("OSFamily", "Linux"), ("ISA", "x86-64")]);
    let (digest, blobs) = execution.lay_out(&request()).unwrap();
    let action: proto::Action = decode(&blobs, &digest);
    let command: proto::Command = decode(&blobs, action.command_digest.as_ref().unwrap());
    assert_eq!(command.arguments, ["/usr/bin/gcc", "-c", "a.c"]);
    // Sorted by name, as the protocol requires.
    let env: Vec<(&str, &str)> = command
        .environment_variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(
        env,
        [("LANG", "C"), ("PATH", "/usr/bin"), ("PWD", "/src/build")]
    );
    assert_eq!(command.working_directory, "src/build");
    assert_eq!(command.output_paths, ["a.d", "out/a.o"]);
    assert_eq!(command.output_files, command.output_paths);
    let names: Vec<&str> = action
        .platform
        .as_ref()
        .unwrap()
        .properties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["ISA", "OSFamily"]);
    assert_eq!(action.platform, command.platform);
    assert_eq!(action.timeout.unwrap().seconds, 90);
    assert!(!action.do_not_cache);
    // The root holds /src/build/a.c and the empty /tmp; the file itself is read from disk
    // only if the service lacks it.
    let root: proto::Directory = decode(&blobs, action.input_root_digest.as_ref().unwrap());
    let dirs: Vec<&str> = root.directories.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(dirs, ["src", "tmp"]);
    assert!(
        blobs
            .iter()
            .any(|(_, b)| matches!(b, PathOrBytes::Path(p) if p == Path::new("/src/build/a.c")))
    );
    // The same request is the same action (two clients' compiles merge on the service).
    assert_eq!(execution.lay_out(&request()).unwrap().0, digest);
}

#[test]
fn a_request_the_protocol_cannot_name_is_refused_before_any_call() {
    let execution = execution(&[]);
    let mut relative = request();
    relative.cwd = PathBuf::from("src/build");
    assert!(execution.lay_out(&relative).is_err());
    let mut dotdot = request();
    dotdot.inputs[0].0 = PathBuf::from("/src/../etc/passwd");
    assert!(execution.lay_out(&dotdot).is_err());
}

#[test]
fn a_finished_operation_gives_its_response_or_why_not() {
    let response = proto::ExecuteResponse {
        result: Some(proto::ActionResult {
            exit_code: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    let done = proto::Operation {
        name: "op".into(),
        done: true,
        response: Some(proto::Any {
            type_url: "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse".into(),
            value: prost::Message::encode_to_vec(&response),
        }),
        ..Default::default()
    };
    assert_eq!(finished(done).unwrap().result.unwrap().exit_code, 3);
    let failed = proto::Operation {
        done: true,
        error: Some(proto::Status {
            code: Code::Internal as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    };
    assert!(matches!(finished(failed), Err(Failure::Server(m)) if m.contains("boom")));
    let empty = proto::Operation {
        done: true,
        ..Default::default()
    };
    assert!(matches!(finished(empty), Err(Failure::Result(_))));
}
