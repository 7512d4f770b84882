//! What a family needs to run a miss on a remote worker (see `execution`): what each
//! slot read when it last compiled here (observation's record: remote inputs come from
//! it, so a slot's first compile is always local), the SHA-256 digests of the files to
//! upload (remembered by their stamps), and the toolchain to ship with the action (the
//! programs the compile ran, their shared libraries and the dynamic loader, found with
//! `ldd`), uploaded once per toolchain.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::observe::Observed;
use super::stamp::FileStamp;
use crate::config::ExecutionConfig;
use crate::execution::{Execution, InputTree, TreeFile};
use crate::process::{CommandSpec, Launcher};
use crate::reapi::proto::Digest;
use crate::stats::{ExecutionCounters, Stats};

/// Slots whose inputs are remembered (the oldest half is dropped past this).
const SLOTS_REMEMBERED: usize = 50_000;

/// Files whose digests are remembered.
const DIGESTS_REMEMBERED: usize = 200_000;

/// Each slot's observed inputs with the order they came in, and the clock of that order.
type Slots = (HashMap<u64, (u64, Arc<Observed>)>, u64);

/// Each program's shared libraries and loader, by the program's path and stamp.
type Libraries = HashMap<(PathBuf, FileStamp), Arc<Vec<PathBuf>>>;

/// Remote execution for the families: the service and what is known about slots.
pub struct Remote {
    pub execution: Execution,
    /// Whether the toolchain goes with each action (workers without it).
    upload_toolchain: bool,
    /// The test switch: a slot seen before never compiles locally.
    pub forbid_local: bool,
    /// Each slot's last local compile's observed inputs.
    slots: Mutex<Slots>,
    digests: Mutex<HashMap<PathBuf, (FileStamp, TreeFile)>>,
    libraries: Mutex<Libraries>,
    /// Toolchains (by their own Merkle root) uploaded by this server, or being uploaded.
    toolchains: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>,
}

impl Remote {
    /// Remote execution as `config` sets it; no network I/O. Errors: the endpoint's.
    pub fn new(config: &ExecutionConfig) -> io::Result<Remote> {
        Ok(Remote {
            execution: Execution::new(&config.settings)?,
            upload_toolchain: config.upload_toolchain,
            forbid_local: config.forbid_local,
            slots: Mutex::default(),
            digests: Mutex::default(),
            libraries: Mutex::default(),
            toolchains: Mutex::default(),
        })
    }

    /// Remembers what `slot`'s compile read (its last local, observed compile).
    pub fn remember(&self, slot: u64, observed: &Observed) {
        let mut guard = self.slots.lock().unwrap();
        let (slots, clock) = &mut *guard;
        *clock += 1;
        slots.insert(slot, (*clock, Arc::new(observed.clone())));
        if slots.len() > SLOTS_REMEMBERED {
            let cut = *clock - SLOTS_REMEMBERED as u64 / 2;
            slots.retain(|_, (at, _)| *at > cut);
        }
    }

    /// What `slot` read when it last compiled here; None for a slot never seen.
    pub fn inputs_of(&self, slot: u64) -> Option<Arc<Observed>> {
        self.slots
            .lock()
            .unwrap()
            .0
            .get(&slot)
            .map(|(_, o)| o.clone())
    }

    /// The digest and executable bit of the regular file at `path` (None for anything
    /// else, or a file that is gone), remembered by its stamp.
    pub fn tree_file(&self, path: &Path) -> io::Result<Option<TreeFile>> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let stamp = FileStamp::of(&meta);
        if let Some((known, file)) = self.digests.lock().unwrap().get(path)
            && *known == stamp
        {
            return Ok(Some(file.clone()));
        }
        let data = std::fs::read(path)?;
        let file = TreeFile {
            digest: Digest {
                hash: Sha256::digest(&data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                size_bytes: data.len() as i64,
            },
            executable: meta.permissions().mode() & 0o111 != 0,
        };
        if stamp.settled() {
            let mut digests = self.digests.lock().unwrap();
            if digests.len() >= DIGESTS_REMEMBERED {
                digests.clear();
            }
            digests.insert(path.to_owned(), (stamp, file.clone()));
        }
        Ok(Some(file))
    }

    /// The files of the toolchain made of `programs` (each program, its shared libraries
    /// and their loader), with their digests; none when workers bring their own. The
    /// first time a toolchain is seen, it is uploaded on its own and counted.
    pub async fn toolchain(
        self: &Arc<Self>,
        launcher: &Launcher,
        programs: &[PathBuf],
        stats: &Stats,
    ) -> io::Result<Vec<(PathBuf, TreeFile)>> {
        if !self.upload_toolchain {
            return Ok(Vec::new());
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        for program in programs {
            paths.push(program.clone());
            paths.extend(self.libraries_of(launcher, program).await?.iter().cloned());
        }
        paths.sort();
        paths.dedup();
        let files = self.tree_files(paths).await?;
        let mut tree = InputTree::default();
        for (path, file) in &files {
            tree.add_file(path, file.clone())?;
        }
        // The toolchain's own Merkle root names it: a change to any of its files is
        // another toolchain.
        let (root, _) = tree.finish();
        // Uploaded once: compiles that need it meanwhile wait for that upload.
        let once = self
            .toolchains
            .lock()
            .unwrap()
            .entry(root.hash.clone())
            .or_default()
            .clone();
        once.get_or_try_init(|| async {
            let sent = self.execution.upload_files(&files).await?;
            tracing::info!(
                "toolchain {} ({} files): {sent} bytes uploaded",
                &root.hash[..12],
                files.len()
            );
            update(stats, |e| {
                e.toolchain_uploads += u64::from(sent > 0);
                e.bytes_uploaded += sent;
            });
            Ok::<(), io::Error>(())
        })
        .await?;
        Ok(files)
    }

    /// The regular files among `paths` with their digests (see [`Remote::tree_file`]),
    /// worked out on the blocking pool: a file not seen before is read whole.
    pub async fn tree_files(
        self: &Arc<Self>,
        paths: Vec<PathBuf>,
    ) -> io::Result<Vec<(PathBuf, TreeFile)>> {
        let remote = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(paths.len());
            for path in paths {
                if let Some(file) = remote.tree_file(&path)? {
                    out.push((path, file));
                }
            }
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The shared libraries and loader `program` loads (`ldd`'s answer), remembered.
    async fn libraries_of(
        &self,
        launcher: &Launcher,
        program: &Path,
    ) -> io::Result<Arc<Vec<PathBuf>>> {
        let stamp = FileStamp::read(program)?;
        let key = (program.to_owned(), stamp);
        if let Some(known) = self.libraries.lock().unwrap().get(&key) {
            return Ok(known.clone());
        }
        let mut spec = CommandSpec::new("ldd", "/");
        spec.args = vec![OsString::from(program)];
        spec.env = vec![("LC_ALL".into(), "C".into())];
        let output = launcher.run_probe(spec).await?;
        // A static program has none; ldd says so and exits non-zero.
        let libraries = Arc::new(if output.exit.success() {
            parse_ldd(&output.stdout)
        } else {
            Vec::new()
        });
        self.libraries
            .lock()
            .unwrap()
            .insert(key, libraries.clone());
        Ok(libraries)
    }
}

/// Updates the execution counters.
pub fn update(stats: &Stats, f: impl FnOnce(&mut ExecutionCounters)) {
    stats.update(|c| f(c.execution.get_or_insert_default()));
}

/// The absolute paths in `ldd`'s output: `name => /path (0x…)` lines and the loader's
/// `/path (0x…)` line; the vDSO and "not found" lines name no file.
pub fn parse_ldd(text: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        let path = match line.windows(4).position(|w| w == b" => ") {
            Some(at) => &line[at + 4..],
            None => line,
        };
        if !path.starts_with(b"/") {
            continue;
        }
        let end = path
            .windows(2)
            .position(|w| w == b" (")
            .unwrap_or(path.len());
        out.push(PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::mock::{MockRunner, output};

    #[tokio::test]
    async fn a_programs_libraries_come_from_ldd_once_per_version_of_it() {
        let mock = MockRunner::new(|_| {
            Ok(output(
                0,
                b"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n",
                b"",
            ))
        });
        let launcher = Launcher::new(
            Arc::new(mock.clone()),
            cachet_jobserver::Jobserver::new(1).unwrap(),
        );
        let config = ExecutionConfig {
            settings: crate::execution::Settings {
                target: crate::reapi::Target {
                    endpoint: "grpc://127.0.0.1:1".into(),
                    headers: Vec::new(),
                    ca_file: None,
                    timeout: std::time::Duration::from_secs(1),
                },
                instance_name: String::new(),
                platform: Vec::new(),
                max_in_flight: 1,
                timeout: std::time::Duration::from_secs(1),
                breaker: None,
            },
            upload_toolchain: true,
            forbid_local: false,
            shown: Vec::new(),
        };
        let remote = Remote::new(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("cc1");
        std::fs::write(&program, b"\x7fELF").unwrap();
        for _ in 0..2 {
            let libraries = remote.libraries_of(&launcher, &program).await.unwrap();
            assert_eq!(
                *libraries,
                [
                    PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2")
                ]
            );
        }
        // Asked once, exactly so: no token, no jobserver, the C locale.
        let calls = mock.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].program, Path::new("ldd"));
        assert_eq!(calls[0].args, [program.as_os_str()]);
        assert_eq!(calls[0].cwd, Path::new("/"));
        assert_eq!(calls[0].env, [("LC_ALL".into(), "C".into())]);
    }

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = b"\tlinux-vdso.so.1 (0x00007ffc)\n\
            \tlibzstd.so.1 => /lib/x86_64-linux-gnu/libzstd.so.1 (0x00007f1)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
            \tlibgone.so => not found\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libzstd.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd(b"\tnot a dynamic executable\n").is_empty());
    }
}
