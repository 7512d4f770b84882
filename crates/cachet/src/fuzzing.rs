//! Entry points for fuzzing: one per parser of untrusted bytes, each taking arbitrary
//! bytes and returning without panicking, whatever they are. `fuzz/` (cargo-fuzz, nightly)
//! runs them under libFuzzer; `tests/fuzz_corpora.rs` replays the committed corpora and
//! the inputs that once failed through the very same functions on stable.
//!
//! Not part of cachet's interface: public only so that those two can reach it.

use std::ffi::OsString;
use std::io::Cursor;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use crate::cache::CacheEntry;
use crate::compiler::c::args as c_args;
use crate::compiler::depfile::{self, Layout};
use crate::compiler::manifest::Manifest;
use crate::compiler::rustc::args as rustc_args;
use crate::config::Config;
use crate::protocol::{self, Request, Response, frame};
use crate::reapi::proto;

/// A fuzz target: it takes any bytes and must return.
pub type Target = fn(&[u8]);

/// Every target: its name (a directory under `fuzz/corpus/`) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("protocol", protocol),
    ("c_args", c_args),
    ("rustc_args", rustc_args),
    ("depfile", depfile),
    ("makeflags", makeflags),
    ("config", config),
    ("entry", entry),
    ("manifest", manifest),
    ("chunk_table", chunk_table),
    ("memcached_reply", memcached_reply),
    ("http_layout", http_layout),
    ("reapi", reapi),
];

/// Runs target `name` on `data`; false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, target)) => {
            target(data);
            true
        }
        None => false,
    }
}

/// Bytes as a command line: arguments split at NUL bytes.
fn words(data: &[u8]) -> Vec<OsString> {
    data.split(|b| *b == 0)
        .map(|w| OsString::from_vec(w.to_vec()))
        .collect()
}

/// Frames read from a stream of bytes (either direction), each decoded as a request and
/// as a response; and the handshake.
pub fn protocol(data: &[u8]) {
    let _ = protocol::parse_handshake(data);
    let mut stream = Cursor::new(data);
    for _ in 0..64 {
        match frame::read_frame(&mut stream) {
            Ok(Some(payload)) => {
                let _ = protocol::decode::<Request>(&payload);
                let _ = protocol::decode::<Response>(&payload);
            }
            _ => break,
        }
    }
    let _ = protocol::decode::<Request>(data);
    let _ = protocol::decode::<Response>(data);
}

/// A gcc or clang command line (the first byte picks the family), and the same bytes as
/// the text of a response file.
pub fn c_args(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let family = match first & 1 {
        0 => crate::compiler::c::args::Family::Gcc,
        _ => crate::compiler::c::args::Family::Clang,
    };
    let args = words(rest);
    let _ = c_args::parse(&c_args::ParseInput {
        args: &args,
        cwd: Path::new("/nonexistent-cwd"),
        family,
    });
    let _ = c_args::split_response_file(rest);
}

/// A rustc command line.
pub fn rustc_args(data: &[u8]) {
    let args = words(data);
    let _ = rustc_args::parse(&rustc_args::ParseInput {
        args: &args,
        cwd: Path::new("/nonexistent-cwd"),
    });
}

/// A dependency file: rustc's dep-info parser, and the first rule of a gcc or clang one
/// checked and retargeted.
pub fn depfile(data: &[u8]) {
    let _ = depfile::parse(&String::from_utf8_lossy(data));
    let targets = [b"out/a.o".to_vec()];
    let _ = depfile::names_targets(data, &targets);
    for layout in [Layout::Gcc, Layout::Clang] {
        let _ = depfile::retarget(layout, data, &targets);
        let tokens = depfile::target_tokens(
            layout,
            &[depfile::Target {
                text: data.to_vec(),
                quoted: true,
            }],
        );
        let _ = depfile::retarget(layout, data, &tokens);
    }
    let _ = depfile::quote(data);
}

/// `MAKEFLAGS` / `CARGO_MAKEFLAGS` values.
pub fn makeflags(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = cachet_jobserver::flags::parse(&text);
    let _ = cachet_jobserver::flags::jobs(&text);
    let _ = cachet_jobserver::flags::strip(&text);
}

/// A config file's text (with an otherwise empty environment).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let env = |name: &str| match name {
        "CACHET_CONFIG" => Some(OsString::from("/fuzz/config.toml")),
        "HOME" => Some(OsString::from("/fuzz-home")),
        _ => None,
    };
    let _ = Config::load_from(env, |_| Ok(text.clone()));
}

/// A cache entry as a store returns it.
pub fn entry(data: &[u8]) {
    let _ = CacheEntry::decode(data);
}

/// A manifest's bytes (inside its entry).
pub fn manifest(data: &[u8]) {
    let _ = postcard::from_bytes::<Manifest>(data);
}

/// A chunk table and its chunks as a key-value store returns them: the first item is the
/// table, the rest (split at 0xFF 0x00) its chunks.
pub fn chunk_table(data: &[u8]) {
    use crate::cache::remote::chunked::Chunked;
    use crate::cache::{CacheKey, Storage};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let op =
            opendal::Operator::new(opendal::services::Memory::default()).expect("a memory store");
        let key = CacheKey([7; 32]);
        let head = crate::cache::remote::key_path("", &key);
        let mut parts = data.split(|b| *b == 0xFF);
        let _ = op
            .write(&head, parts.next().unwrap_or_default().to_vec())
            .await;
        let hash = data.get(13..45).map(|h| {
            let mut a = [0u8; 32];
            a.copy_from_slice(h);
            blake3::Hash::from(a).to_hex().to_string()
        });
        for (n, chunk) in parts.enumerate().take(64) {
            if let Some(hash) = &hash {
                let _ = op
                    .write(&format!("{head}.{}.{n}", &hash[..16]), chunk.to_vec())
                    .await;
            }
        }
        let store = Chunked::new(Box::new(op), String::new(), 4096, 64);
        let _ = store.get(&key).await;
    });
}

/// A memcached server's reply to `get`.
pub fn memcached_reply(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut reply = data;
    let _ = runtime.block_on(crate::cache::remote::memcached::read_value(&mut reply));
}

/// An ActionCache reply of a bazel-remote style HTTP cache.
pub fn http_layout(data: &[u8]) {
    let url = reqwest::Url::parse("http://cache.invalid/ac/0").expect("a url");
    let _ = crate::cache::remote::http_cache::entry_digest(data, &url);
}

/// REAPI messages from a server: an ActionResult, the reapi level's entry layout, an
/// operation and its ExecuteResponse, a Directory.
pub fn reapi(data: &[u8]) {
    use prost::Message as _;
    let _ = proto::ActionResult::decode(data);
    let _ = proto::Directory::decode(data);
    let _ = postcard::from_bytes::<crate::cache::remote::reapi::Layout>(data);
    if let Ok(operation) = proto::Operation::decode(data) {
        let _ = crate::execution::finished(operation);
    }
}

#[cfg(test)]
mod seeds {
    //! `cargo test -p cachet --lib fuzzing::seeds -- --ignored` writes the seed corpora
    //! (`fuzz/corpus/<target>/seed-*`) from real inputs, made by cachet's own encoders
    //! and taken from real builds. Small on purpose: the fuzzer grows its own.
    use std::path::PathBuf;

    use prost::Message as _;

    use super::*;
    use crate::cache::StoredFile;
    use crate::compiler::manifest::Variant;
    use crate::protocol::CompileRequest;

    fn dir(target: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(target: &str, name: &str, data: &[u8]) {
        std::fs::write(dir(target).join(format!("seed-{name}")), data).unwrap();
    }

    fn nul(words: &[&str]) -> Vec<u8> {
        words.join("\0").into_bytes()
    }

    #[test]
    #[ignore = "writes the seed corpora into fuzz/corpus"]
    fn write_seeds() {
        // The protocol: a compile request's frame, a few answers.
        let request = Request::Compile(CompileRequest {
            compiler: b"/usr/bin/gcc".to_vec(),
            args: ["-O2", "-g", "-MMD", "-c", "src/a.c", "-o", "out/a.o"]
                .map(|a| a.as_bytes().to_vec())
                .to_vec(),
            cwd: b"/home/u/proj".to_vec(),
            env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
            umask: 0o022,
            stderr_is_tty: true,
            build_jobserver: None,
            stale_jobserver: None,
            base_dirs: vec![b"/home/u".to_vec()],
        });
        let mut frames = Vec::new();
        frame::write_frame(&mut frames, &protocol::encode(&request)).unwrap();
        frame::write_frame(&mut frames, &protocol::encode(&Request::Stats)).unwrap();
        write("protocol", "compile-request", &frames);
        let mut answers = Vec::new();
        for response in [
            Response::CompilerStarted { pgid: 4242 },
            Response::Stderr(b"a.c:1:1: warning: unused\n".to_vec()),
            Response::Finished(protocol::Exit::Code(0)),
        ] {
            frame::write_frame(&mut answers, &protocol::encode(&response)).unwrap();
        }
        write("protocol", "answers", &answers);
        write("protocol", "handshake", &protocol::handshake(3));

        // Command lines as builds make them (make + -MMD, CMake, the kernel's, clang).
        write(
            "c_args",
            "make-mmd",
            &[
                &[0u8][..],
                &nul(&[
                    "-O2",
                    "-g",
                    "-Wall",
                    "-MMD",
                    "-MP",
                    "-Iinclude",
                    "-c",
                    "src/a.c",
                    "-o",
                    "out/a.o",
                ]),
            ]
            .concat(),
        );
        write(
            "c_args",
            "cmake",
            &[
                &[0u8][..],
                &nul(&[
                    "-DNDEBUG",
                    "-I/src/p/include",
                    "-O3",
                    "-MD",
                    "-MT",
                    "CMakeFiles/p.dir/a.c.o",
                    "-MF",
                    "CMakeFiles/p.dir/a.c.o.d",
                    "-o",
                    "CMakeFiles/p.dir/a.c.o",
                    "-c",
                    "/src/p/a.c",
                ]),
            ]
            .concat(),
        );
        write(
            "c_args",
            "kernel",
            &[
                &[0u8][..],
                &nul(&[
                    "-Wp,-MMD,kernel/.fork.o.d",
                    "-nostdinc",
                    "-Iarch/x86/include",
                    "-include",
                    "./include/linux/compiler-version.h",
                    "-D__KERNEL__",
                    "-fno-PIE",
                    "-O2",
                    "-c",
                    "-o",
                    "kernel/fork.o",
                    "kernel/fork.c",
                ]),
            ]
            .concat(),
        );
        write(
            "c_args",
            "clang-pch",
            &[
                &[1u8][..],
                &nul(&[
                    "-x",
                    "c++-header",
                    "-std=c++17",
                    "--serialize-diagnostics",
                    "a.dia",
                    "-fcolor-diagnostics",
                    "pch.h",
                    "-o",
                    "pch.h.pch",
                ]),
            ]
            .concat(),
        );
        write(
            "c_args",
            "response-file",
            b"\x00-O2 \"-DNAME=a b\" 'x\\y' @more.rsp -c a.c",
        );

        write(
            "rustc_args",
            "cargo",
            &nul(&[
                "--crate-name",
                "serde",
                "--edition=2021",
                "src/lib.rs",
                "--error-format=json",
                "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
                "--crate-type",
                "lib",
                "--emit=dep-info,metadata,link",
                "-C",
                "opt-level=3",
                "-C",
                "embed-bitcode=no",
                "--cfg",
                "feature=\"std\"",
                "-C",
                "metadata=9f1e2d",
                "-C",
                "extra-filename=-9f1e2d",
                "--out-dir",
                "/t/release/deps",
                "-L",
                "dependency=/t/release/deps",
                "--extern",
                "serde_derive=/t/release/deps/libserde_derive-1.so",
                "--cap-lints",
                "allow",
            ]),
        );
        write(
            "rustc_args",
            "bin",
            &nul(&[
                "--crate-name",
                "app",
                "--edition=2024",
                "src/main.rs",
                "--crate-type",
                "bin",
                "--emit=dep-info,link",
                "-C",
                "debuginfo=2",
                "--out-dir",
                "/t/debug/deps",
                "-C",
                "linker=clang",
                "-C",
                "link-arg=-fuse-ld=lld",
                "--remap-path-prefix=/home/u=/ws",
            ]),
        );

        write(
            "depfile",
            "gcc-mmd-mp",
            b"out/a.o: src/a.c include/a.h \\\n include/b\\ c.h\ninclude/a.h:\ninclude/b\\ c.h:\n",
        );
        write(
            "depfile",
            "rustc",
            b"/t/deps/libfoo-1.rmeta: src/lib.rs src/a.rs\n\nsrc/lib.rs:\nsrc/a.rs:\n\n# env-dep:CARGO_PKG_NAME=foo\n# env-dep:OUT_DIR\n",
        );
        write("depfile", "clang-escapes", b"a\\#b.o: $$x.c a\\ b.h\n");

        write(
            "makeflags",
            "make-4.4",
            b" -j8 --jobserver-auth=fifo:/tmp/GMfifo123",
        );
        write(
            "makeflags",
            "make-4.3",
            b"-rR -j4 --jobserver-auth=3,4 -- VAR=x",
        );
        write(
            "makeflags",
            "cargo",
            b"-j --jobserver-fds=5,6 --jobserver-auth=5,6",
        );

        write(
            "config",
            "full",
            b"cache_dir = \"/var/cache/cachet\"\ncache_size = \"20G\"\njobs = 8\nbase_dirs = [\"/home/u\"]\nmemory_limit = \"60%\"\n\n[[remote]]\ntype = \"redis\"\nendpoint = \"redis://127.0.0.1:6379\"\ntimeout = \"2s\"\n\n[[remote]]\ntype = \"reapi\"\nendpoint = \"grpcs://remote.example.com\"\napi_key = \"k\"\nread_only = true\n\n[execution]\nendpoint = \"grpc://127.0.0.1:8980\"\nplatform = [\"OSFamily=Linux\"]\nmax_in_flight = 16\n",
        );

        let entry_value = CacheEntry {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: b"warning: x\n".to_vec(),
            files: vec![
                StoredFile {
                    role: "object".into(),
                    executable: false,
                    data: b"\x7fELF\x02\x01\x01".to_vec(),
                },
                StoredFile {
                    role: "depfile".into(),
                    executable: false,
                    data: b"a.o: a.c a.h\n".to_vec(),
                },
            ],
            meta: vec![("display".into(), vec![1])],
        };
        let encoded = entry_value.encode();
        write("entry", "object", &encoded);

        let manifest_value = Manifest {
            no_direct: false,
            variants: vec![Variant {
                files: vec![
                    (b"src/a.c".to_vec(), [1; 32]),
                    (b"/usr/include/stdio.h".to_vec(), [2; 32]),
                ],
                absent: vec![b"include/stdio.h".to_vec()],
                env: vec![(b"CPATH".to_vec(), None)],
                recorded_cwd: None,
            }],
        };
        write(
            "manifest",
            "one-variant",
            &postcard::to_stdvec(&manifest_value).unwrap(),
        );

        // A chunk table (its hash is the whole's) and two chunks, as chunk_table splits them.
        let whole = vec![5u8; 6000];
        let mut table = vec![1u8];
        table.extend_from_slice(&2u32.to_le_bytes());
        table.extend_from_slice(&(whole.len() as u64).to_le_bytes());
        table.extend_from_slice(blake3::hash(&whole).as_bytes());
        let chunks = [table, whole[..3000].to_vec(), whole[3000..].to_vec()].join(&0xFF);
        write("chunk_table", "two-chunks", &chunks);

        write(
            "memcached_reply",
            "value",
            b"VALUE cachet/ab 0 5\r\nhello\r\nEND\r\n",
        );
        write("memcached_reply", "miss", b"END\r\n");

        let action_result = proto::ActionResult {
            output_files: vec![proto::OutputFile {
                path: ".cachet/entry".into(),
                digest: Some(crate::reapi::digest_of(&encoded)),
                is_executable: false,
            }],
            exit_code: 0,
            ..Default::default()
        };
        write("http_layout", "entry", &action_result.encode_to_vec());
        write("reapi", "action-result", &action_result.encode_to_vec());
        let response = proto::ExecuteResponse {
            result: Some(action_result),
            ..Default::default()
        };
        let operation = proto::Operation {
            name: "operations/1".into(),
            done: true,
            response: Some(proto::Any {
                type_url: "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse"
                    .into(),
                value: response.encode_to_vec(),
            }),
            ..Default::default()
        };
        write("reapi", "operation", &operation.encode_to_vec());
    }
}
