//! A C or C++ miss on a remote worker: the request made from the plan and from what the
//! slot read when it last compiled here, the outputs written where the compiler would
//! have written them, and every way it can fail turned into a local compile.
//!
//! The remote compile reads what the slot's last local compile read (sources, headers,
//! the programs the driver ran), at its content now; the toolchain goes with it. A file
//! the compile now needs and the upload lacks fails the action on a worker that runs it
//! chrooted into the input root, and the miss compiles locally. Paths the last compile
//! looked up and did not find must still be missing, or it compiles locally too.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::plan::Plan;
use crate::compiler::job::Job;
use crate::compiler::observe::Observed;
use crate::compiler::pipeline::Context;
use crate::compiler::remote::{Remote, update};
use crate::execution::{Completed, Request};
use crate::process::{Exit, ProcessOutput};
use crate::stats::millis;

/// How a miss went remotely.
pub(super) enum Attempt {
    /// It ran on a worker: its result (outputs written, output replayed to the client)
    /// and what it read.
    Ran(ProcessOutput, Observed),
    /// It compiles locally (why was counted).
    Local,
    /// It may not compile locally (the test switch) and the remote compile failed: why.
    Forbidden(String),
}

/// Tries `plan`'s compile on a worker. `slot` names the compile across builds.
pub(super) async fn attempt(
    context: &Context,
    remote: &Arc<Remote>,
    job: &Job,
    plan: &Plan,
    slot: u64,
) -> Attempt {
    let Some(record) = remote.inputs_of(slot) else {
        update(&context.stats, |e| e.first_compiles_local += 1);
        return Attempt::Local;
    };
    let started = Instant::now();
    let fallback = |reason: &str, detail: String| {
        tracing::debug!(
            "compiling {} locally: {reason}: {detail}",
            plan.args.input.display()
        );
        update(&context.stats, |e| {
            *e.fallbacks.entry(reason.to_owned()).or_default() += 1
        });
        match remote.forbid_local {
            true => Attempt::Forbidden(format!("{reason}: {detail}")),
            false => Attempt::Local,
        }
    };
    // Hashing inputs and finding the toolchain is work here: it holds a local slot, as
    // the upload does; the remote compile itself holds none.
    let request = {
        let Ok(_slot) = context.launcher.local_slot(&job.cancel).await else {
            return Attempt::Local;
        };
        match request(context, remote, job, plan, &record).await {
            Ok(request) => request,
            Err((reason, detail)) => return fallback(reason, detail),
        }
    };
    let uploading = context.launcher.local_slot(&job.cancel);
    let completed = match remote
        .execution
        .run(&request.0, &job.cancel, uploading)
        .await
    {
        Ok(done) if done.exit_code == 0 => done,
        Ok(done) => {
            let detail = format!(
                "exit {} on {}: {}",
                done.exit_code,
                done.worker,
                String::from_utf8_lossy(&done.stderr).trim()
            );
            return fallback("remote compile failed", detail);
        }
        Err(e) => return fallback(e.label(), e.to_string()),
    };
    let cwd = &job.invocation.cwd;
    if !records_cwd_as_here(plan, cwd, &completed) {
        return fallback(
            "the worker's root is not the client's /",
            format!(
                "the debug info of {} does not name the cwd",
                plan.object.display()
            ),
        );
    }
    if let Err(e) = write_outputs(cwd, &completed, job.invocation.umask) {
        return fallback("outputs not written", e.to_string());
    }
    job.replay_output(&completed.stdout, &completed.stderr);
    let total = started.elapsed();
    update(&context.stats, |e| {
        e.remote_compiles += 1;
        e.remote_cached += u64::from(completed.cached);
        e.upload_ms += millis(completed.upload);
        e.queue_ms += millis(completed.queued);
        e.run_ms += millis(completed.run);
        e.total_ms += millis(total);
        e.bytes_uploaded += completed.bytes_up;
        e.bytes_downloaded += completed.bytes_down;
    });
    tracing::debug!(
        "{} compiled on {} in {total:?}{}",
        plan.args.input.display(),
        completed.worker,
        if completed.cached {
            " (the service's cache)"
        } else {
            ""
        }
    );
    let result = ProcessOutput {
        exit: Exit::Code(0),
        stdout: completed.stdout,
        stderr: completed.stderr,
        max_rss: None,
    };
    Attempt::Ran(result, request.1)
}

/// Why a compile stays local, for stats, and what in particular.
type Refusal = (&'static str, String);

/// The action for `plan`, and what it reads as observation would have recorded it; or why
/// the compile stays local.
async fn request(
    context: &Context,
    remote: &Arc<Remote>,
    job: &Job,
    plan: &Plan,
    record: &Observed,
) -> Result<(Request, Observed), Refusal> {
    let invocation = &job.invocation;
    let cwd = &invocation.cwd;
    let mut outputs = Vec::new();
    for output in plan.outputs() {
        match below(cwd, output) {
            Some(relative) => outputs.push(relative),
            None => return Err(("output outside the cwd", output.display().to_string())),
        }
    }
    // gcc records the cwd as PWD spells it where PWD names the cwd (getpwd, in
    // libiberty), through a symlink say; the input root has no such symlink. A PWD that
    // names another directory is ignored by gcc, and so it does not matter here.
    if let Some(pwd) = invocation.env_var("PWD")
        && pwd != invocation.cwd_bytes()
        && same_file(Path::new(std::ffi::OsStr::from_bytes(pwd)), cwd)
    {
        return Err((
            "PWD is not the cwd",
            String::from_utf8_lossy(pwd).into_owned(),
        ));
    }
    if let Some(found) = record.absent.iter().find(|p| p.exists()) {
        return Err((
            "a file appeared where the compile looked",
            found.display().to_string(),
        ));
    }
    let mut inputs: Vec<PathBuf> = record
        .files
        .iter()
        .chain(&record.found)
        .chain(&record.programs)
        .cloned()
        .collect();
    inputs.sort();
    inputs.dedup();
    let files = remote
        .tree_files(inputs)
        .await
        .map_err(|e| ("inputs unreadable", e.to_string()))?;
    let mut programs = vec![invocation.compiler.clone()];
    programs.extend(record.programs.iter().cloned());
    let toolchain = remote
        .toolchain(&context.launcher, &programs, &context.stats)
        .await
        .map_err(|e| ("toolchain not uploaded", e.to_string()))?;
    // What the compile read, as it reads it now.
    let present: std::collections::HashSet<&Path> =
        files.iter().map(|(p, _)| p.as_path()).collect();
    let env: Vec<(Vec<u8>, Option<Vec<u8>>)> = record
        .env
        .iter()
        .map(|(name, _)| {
            let value = std::str::from_utf8(name)
                .ok()
                .and_then(|n| invocation.env_var(n))
                .map(<[u8]>::to_vec);
            (name.clone(), value)
        })
        .collect();
    let observed = Observed {
        files: record
            .files
            .iter()
            .filter(|p| present.contains(p.as_path()))
            .cloned()
            .collect(),
        found: record
            .found
            .iter()
            .filter(|p| present.contains(p.as_path()))
            .cloned()
            .collect(),
        absent: record.absent.clone(),
        programs: record.programs.clone(),
        env: env.clone(),
    };
    let text = |bytes: &[u8], what: &str| -> Result<String, Refusal> {
        String::from_utf8(bytes.to_vec()).map_err(|_| ("not UTF-8", format!("{what} is not UTF-8")))
    };
    let mut command_env = Vec::new();
    for (name, value) in &env {
        let Some(value) = value else { continue };
        let name = text(name, "a variable's name")?;
        let value = match name.as_str() {
            // The cwd as the compile records it; temporary files in the root's /tmp.
            "PWD" => continue,
            "TMPDIR" | "TMP" | "TEMP" => "/tmp".to_owned(),
            _ => text(value, &name)?,
        };
        command_env.push((name, value));
    }
    if let Some(path) = invocation.env_var("PATH") {
        command_env.push(("PATH".into(), text(path, "PATH")?));
    }
    command_env.push(("PWD".into(), text(invocation.cwd_bytes(), "the cwd")?));
    let mut arguments = vec![text(
        invocation.compiler.as_os_str().as_bytes(),
        "the compiler",
    )?];
    for arg in &plan.compile_args {
        arguments.push(text(arg.as_bytes(), "an argument")?);
    }
    let mut all = files;
    all.extend(toolchain);
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    let request = Request {
        arguments,
        env: command_env,
        cwd: cwd.clone(),
        outputs,
        inputs: all,
        dirs: vec![PathBuf::from("/tmp")],
    };
    Ok((request, observed))
}

/// Whether the object names the cwd where a local compile's would: with debug info and
/// no prefix map, gcc and clang record the cwd (`DW_AT_comp_dir`). A worker that ran the
/// action in a directory of its own instead of chrooted into the input root records
/// that directory: its result must not be used (nor cached).
fn records_cwd_as_here(plan: &Plan, cwd: &Path, completed: &Completed) -> bool {
    if !plan.args.debug_info || !plan.args.prefix_maps.is_empty() {
        return true;
    }
    let object = below(cwd, &plan.object);
    let cwd = cwd.as_os_str().as_bytes();
    completed
        .outputs
        .iter()
        .filter(|(path, _, _)| Some(path) == object.as_ref())
        .all(|(_, data, _)| memchr::memmem::find(data, cwd).is_some())
}

/// Whether `a` and `b` are the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `path` relative to `cwd` when it lies below it (no `..`), as the protocol names
/// outputs.
fn below(cwd: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(cwd).ok()?;
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    String::from_utf8(relative.as_os_str().as_bytes().to_vec()).ok()
}

/// Writes the action's outputs where the compiler would have, with the modes it would
/// have given them under `umask`.
fn write_outputs(cwd: &Path, completed: &Completed, umask: u32) -> io::Result<()> {
    for (relative, data, executable) in &completed.outputs {
        let path = cwd.join(relative);
        let mode = if *executable { 0o777 } else { 0o666 } & !umask;
        let dir = path.parent().unwrap_or(cwd);
        let mut tmp = tempfile::Builder::new()
            .prefix(".cachet-remote")
            .tempfile_in(dir)?;
        io::Write::write_all(&mut tmp, data)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.persist(&path).map_err(|e| e.error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_named_below_the_cwd_or_not_at_all() {
        let cwd = Path::new("/b/build");
        assert_eq!(
            below(cwd, Path::new("/b/build/obj/a.o")).as_deref(),
            Some("obj/a.o")
        );
        assert_eq!(below(cwd, Path::new("/b/other/a.o")), None);
        assert_eq!(below(cwd, Path::new("/b/build/../a.o")), None);
    }
}
