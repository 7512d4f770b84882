//! One gcc or clang compile: direct mode (no preprocessor on a hit, nor on a miss), else
//! preprocessor mode; a hit restores the outputs, a miss runs the compile observed and
//! stores what it read as a manifest variant.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::identity::Identity;
use super::plan::Plan;
use super::reasons::NotCacheable;
use super::remote::{self, Attempt};
use super::{direct, key, outputs, recipe};
use crate::cache::{Cache, CacheEntry, CacheKey};
use crate::compiler::basedir::{BaseDirs, Maps};
use crate::compiler::explain::{self, Recipe};
use crate::compiler::job::{Job, Outcome, Uncacheable};
use crate::compiler::manifest::{self, Manifest, NotStored, TimeMacros, Variant, Verdict};
use crate::compiler::pipeline::{Context, publish};
use crate::compiler::stamp::FileClock;
use crate::memory::Slot;
use crate::process::{Exit, ProcessOutput};
use crate::stats::Stats;

/// Outputs smaller than this are restored on the runtime thread itself.
const INLINE_WRITE_LIMIT: usize = 1 << 20;

/// The keys a miss is stored under: the variant's entry and the manifest hang off
/// `parent` (direct mode's base key, or preprocessor mode's key).
struct Keys {
    parent: CacheKey,
    manifest: CacheKey,
    maps: Maps,
    direct: bool,
}

/// Serves one planned compile.
pub(super) async fn compile(
    context: &Context,
    job: &Job,
    identity: &Identity,
    plan: &Plan,
) -> io::Result<Outcome> {
    let started = Instant::now();
    let invocation = &job.invocation;
    let cwd = &invocation.cwd;

    if direct::applies(plan, invocation, context.observing()) {
        // Inline, like the other small file work on the hit path: a hop to the blocking
        // pool costs more than a stat (and the hash is usually remembered).
        let source = context.hashes.hash(&cwd.join(&plan.args.input))?;
        let (base, maps) = direct::base_key(identity, plan, invocation, source.as_bytes());
        let manifest_key = manifest::manifest_key(&base);
        let manifest = manifest::read(&context.cache, &manifest_key).await;
        tracing::debug!(target: "cachet::timing", "server: direct key and manifest after {:?}", started.elapsed());
        if !manifest.no_direct {
            if !invocation.recache
                && let Some(entry) = lookup(context, &manifest, &base, &maps, job).await
                && restore_hit(context, &entry, plan, job, started).await?
            {
                context.stats.update(|c| c.direct_hits += 1);
                tracing::debug!(target: "cachet::timing", "server: direct hit restored after {:?}", started.elapsed());
                return Ok(Outcome::Hit);
            }
            let keys = Keys {
                parent: base,
                manifest: manifest_key,
                maps,
                direct: true,
            };
            let recipe = recipe::recipe(identity, plan, invocation, context.explain.masker(), true);
            return compile_observed(context, job, plan, keys, None, recipe).await;
        }
    }

    let source = match &plan.preprocess_args {
        Some(args) => {
            let spec = context.spec(invocation, args.clone());
            let pre = job.executor.run(spec, None, job.cancel.clone()).await?;
            if !pre.exit.success() {
                // The real compile reports the error as the user would see it.
                return run_uncached(context, job, plan).await;
            }
            pre.stdout
        }
        None => tokio::fs::read(cwd.join(&plan.args.input)).await?,
    };
    let key = key::key(identity, plan, invocation, &source);
    let manifest_key = manifest::manifest_key(&key);
    let maps = Maps::default();
    if !invocation.recache {
        let manifest = manifest::read(&context.cache, &manifest_key).await;
        if let Some(entry) = lookup(context, &manifest, &key, &maps, job).await
            && restore_hit(context, &entry, plan, job, started).await?
        {
            return Ok(Outcome::Hit);
        }
    }
    let keys = Keys {
        parent: key,
        manifest: manifest_key,
        maps,
        direct: false,
    };
    let recipe = recipe::recipe(identity, plan, invocation, context.explain.masker(), false);
    compile_observed(context, job, plan, keys, Some(source), recipe).await
}

/// Writes a hit's outputs and replays it; false when they could not be written (for
/// example, the output directory is gone: the compiler will say so).
async fn restore_hit(
    context: &Context,
    entry: &CacheEntry,
    plan: &Plan,
    job: &Job,
    started: Instant,
) -> io::Result<bool> {
    tracing::debug!(target: "cachet::timing", "server: entry read after {:?}", started.elapsed());
    if entry.exit_code != 0 {
        // Only successful compiles are stored; anything else is not ours to replay.
        return Ok(false);
    }
    let umask = job.invocation.umask;
    // Small outputs are written inline; big ones on the blocking pool.
    let size: usize = entry.files.iter().map(|f| f.data.len()).sum();
    let restored = if size < INLINE_WRITE_LIMIT {
        outputs::restore(entry, plan, umask)
    } else {
        let (entry, plan) = (entry.clone(), plan.clone());
        tokio::task::spawn_blocking(move || outputs::restore(&entry, &plan, umask))
            .await
            .map_err(io::Error::other)?
    };
    if let Err(e) = restored {
        tracing::debug!("restoring a hit failed: {e}");
        return Ok(false);
    }
    job.replay_output(&entry.stdout, &outputs::diagnostics(entry, plan));
    context.count_hit(started);
    Ok(true)
}

/// The entry of the first variant whose inputs are all as they were.
async fn lookup(
    context: &Context,
    manifest: &Manifest,
    parent: &CacheKey,
    maps: &Maps,
    job: &Job,
) -> Option<CacheEntry> {
    let invocation = &job.invocation;
    for variant in &manifest.variants {
        if manifest::matches(variant, &invocation.cwd, &invocation.env, &context.hashes)
            && let Some(entry) = context
                .cache
                .get(&manifest::entry_key(parent, variant, maps))
                .await
        {
            return Some(entry);
        }
    }
    None
}

/// A miss in either mode: one observed compile, whose inputs become a manifest variant
/// under `keys.parent`. `preprocessed` is preprocessor mode's text (for the fallback
/// rules when the compile cannot be observed whole). `recipe` is the key's parts, for
/// `explain`: what the compile read is added to it and the miss explained in the
/// background.
async fn compile_observed(
    context: &Context,
    job: &Job,
    plan: &Plan,
    keys: Keys,
    preprocessed: Option<Vec<u8>>,
    mut recipe: Recipe,
) -> io::Result<Outcome> {
    let started = Instant::now();
    let invocation = &job.invocation;
    let restore = {
        let (plan, umask) = (plan.clone(), invocation.umask);
        move |entry: &CacheEntry| outputs::restore(entry, &plan, umask)
    };
    // Base dirs make one direct key serve several checkouts; only one checkout's
    // compile may be followed.
    let inflight = invocation
        .base_dirs
        .inflight_key(&keys.parent, invocation.cwd_bytes());
    let mut leader = match context.lead_or_follow(inflight, restore, job).await? {
        Ok(leader) => leader,
        Err(replayed) => return Ok(replayed),
    };
    let compile_start = FileClock::now();
    let slot = Slot::of(&invocation.compiler, &invocation.cwd, &plan.compile_args).id;
    let attempt = match &context.remote {
        Some(remote) => remote::attempt(context, remote, job, plan, slot).await,
        None => Attempt::Local,
    };
    let (result, watch, ran_remotely) = match attempt {
        Attempt::Ran(result, observed) => (result, None, Some(observed)),
        Attempt::Forbidden(why) => {
            let result = ProcessOutput {
                exit: Exit::Code(1),
                stdout: Vec::new(),
                stderr: format!("cachet: a local compile is forbidden (forbid_local): {why}\n")
                    .into_bytes(),
                max_rss: None,
            };
            job.replay_output(&result.stdout, &result.stderr);
            return Ok(context.finish_failed(leader, &result));
        }
        Attempt::Local => {
            let watch = context.watch()?;
            let result = context
                .run_leading(
                    leader.as_mut(),
                    job,
                    plan.compile_args.clone(),
                    watch.as_ref(),
                )
                .await?;
            (result, watch, None)
        }
    };
    if !result.exit.success() {
        return Ok(context.finish_failed(leader, &result));
    }
    // Read the outputs before the client hears back: once it has, the build may move
    // or delete them.
    let entry = outputs::collect(plan, &result).await;
    let storing = context
        .reserve_write(entry.as_ref().map_or(0, CacheEntry::data_size))
        .await;
    context.count_miss(started, invocation.recache);
    let entry = match entry {
        Ok(entry) => entry,
        Err(e) => {
            publish(leader, &result, || None);
            tracing::warn!("could not read the outputs of a compile: {e}");
            context.stats.update(|c| c.cache_write_errors += 1);
            return Ok(Outcome::Miss);
        }
    };
    crate::cache::note_stored(keys.parent, entry.data_size());
    let failures = crate::cache::read_log::current().failures_text();
    // What the compile read is worked out and stored off the request's future: the
    // client has its answer, and the build's jobserver (held by that future) goes back
    // to the build now rather than after hashing every input.
    let verdict = {
        let size = entry.data_size();
        let (plan, cwd, hashes) = (plan.clone(), invocation.cwd.clone(), context.hashes.clone());
        let base = invocation.base_dirs.clone();
        let env = invocation.env.clone();
        let stats = context.stats.clone();
        let explain = context.explain.clone();
        let remote = context.remote.clone();
        crate::background::run(size, move || {
            let verdict = |observed| match (observed, &preprocessed) {
                (Ok(observed), _) => manifest::variant_from_observed(
                    &observed,
                    &cwd,
                    &base,
                    &hashes,
                    compile_start,
                    match (keys.direct, plan.fixed_dates) {
                        (false, _) => TimeMacros::Keyed,
                        (true, true) => TimeMacros::TimestampOnly,
                        (true, false) => TimeMacros::All,
                    },
                ),
                (Err(why), None) => Verdict::PreprocessorMode(why),
                // Preprocessed text does not show a profile or a sanitizer list.
                (Err(why), Some(_)) if plan.args.reads_flag_files => Verdict::Skip(why),
                (Err(_), Some(text)) => manifest::fallback_variant(text, &cwd),
            };
            let observed = match ran_remotely {
                // A remote compile read what it was given: the slot's last inputs.
                Some(observed) => Ok(observed),
                None => {
                    let observed = watch
                        .ok_or(NotStored::Unobserved)
                        .and_then(|watch| watch.finish().map_err(NotStored::from))
                        .and_then(|log| {
                            let outputs: Vec<&Path> = plan.outputs().collect();
                            log.complete(std::process::id())?;
                            Ok(log.inputs(&outputs, &cwd, &env))
                        });
                    stats.update(|c| match &observed {
                        Ok(_) => c.observed_compiles += 1,
                        Err(_) => c.unobserved_compiles += 1,
                    });
                    if let (Some(remote), Ok(observed)) = (&remote, &observed) {
                        remote.remember(slot, observed);
                    }
                    observed
                }
            };
            let mut verdict = verdict(observed);
            if let Verdict::Store(variant) = &mut verdict {
                tie_to_cwd(variant, &plan, &base, &cwd, &entry);
                let source = plan.args.input.as_os_str().as_bytes();
                recipe.add_variant(variant, source, "header", explain.masker());
            }
            (verdict, entry, recipe)
        })
    };
    let (cache, stats) = (context.cache.clone(), context.stats.clone());
    let (explain, forced) = (context.explain.clone(), invocation.recache);
    // The leader stays in flight until its entry is readable: the same compile asked for
    // meanwhile follows it instead of missing.
    tokio::spawn(async move {
        let _storing = storing;
        match verdict.await {
            Ok((verdict, entry, recipe)) => {
                let stored = matches!(verdict, Verdict::Store(_));
                let entry = store_variant(&cache, &stats, keys, entry, verdict).await;
                publish(leader, &result, || Some(CacheEntry::clone(&entry)));
                explain::miss(cache, explain, recipe, forced, stored, failures).await;
            }
            Err(e) => {
                publish(leader, &result, || None);
                tracing::warn!("working out what a compile read failed: {e}");
            }
        }
    });
    Ok(Outcome::Miss)
}

/// Where a variant depends on the cwd, which neither key holds (but as debug info records
/// it), nor, under base dirs, the paths made relative to it.
/// - gcc reads `PWD` only to spell the cwd it records (debug info, coverage): where nothing
///   records the cwd, how the build's shell spelled it does not matter, and it is dropped.
/// - An output that names the cwd or a rebased path anyway (`__FILE__` of an absolute
///   path, a string) makes the variant serve this cwd only. The `.d` and diagnostics are
///   rewritten on a hit where base dirs cover the cwd, and looked at otherwise.
fn tie_to_cwd(variant: &mut Variant, plan: &Plan, base: &BaseDirs, cwd: &Path, entry: &CacheEntry) {
    if !plan.args.debug_info && !plan.args.records_cwd {
        variant.env.retain(|(name, _)| name != b"PWD");
    }
    let cwd = cwd.as_os_str().as_bytes();
    let rewritten = base.covers(cwd);
    let mut needles = std::iter::once(cwd).chain(plan.rebased.iter().map(|(p, _)| p.as_slice()));
    if cwd != b"/" && needles.any(|needle| outputs::records(entry, needle, rewritten)) {
        variant.recorded_cwd = Some(cwd.to_vec());
    }
}

/// The preprocessor failed: the real compile runs uncached and reports the error as the
/// user would see it.
async fn run_uncached(context: &Context, job: &Job, plan: &Plan) -> io::Result<Outcome> {
    let result = context
        .run_streaming(job, plan.compile_args.clone(), None, &job.cancel)
        .await?;
    if result.exit.success() {
        // The preprocessor failed but the compile did not: odd, but the build goes on.
        let label = Uncacheable::C(NotCacheable::PreprocessorFailed).to_string();
        context
            .stats
            .update(|c| *c.uncacheable.entry(label).or_default() += 1);
        Ok(Outcome::Miss)
    } else {
        context.stats.update(|c| c.compile_failures += 1);
        Ok(Outcome::Failed(result.exit))
    }
}

/// Stores `entry` under the variant of `verdict`, and records the variant (or that the
/// source needs preprocessor mode) in the manifest.
/// Stores the entry under its variant and the variant in the manifest, and returns once
/// both are readable (their writes go on in the background); the entry as stored.
async fn store_variant(
    cache: &Cache,
    stats: &Stats,
    keys: Keys,
    entry: CacheEntry,
    verdict: Verdict,
) -> Arc<CacheEntry> {
    let variant = match verdict {
        Verdict::Store(variant) => Some(variant),
        Verdict::PreprocessorMode(why) if keys.direct => {
            tracing::debug!("preprocessor mode from now on: {why}");
            None
        }
        Verdict::PreprocessorMode(why) | Verdict::Skip(why) => {
            tracing::debug!("not stored: {why}");
            stats.update(|c| *c.not_stored.entry(why.label().into()).or_default() += 1);
            return Arc::new(entry);
        }
    };
    let stored = match &variant {
        Some(variant) => cache.put_in_background(
            manifest::entry_key(&keys.parent, variant, &keys.maps),
            entry,
        ),
        None => Arc::new(entry),
    };
    manifest::update(cache, keys.manifest, move |manifest| match variant {
        Some(variant) => manifest.add(variant),
        None => manifest.no_direct = true,
    })
    .await;
    stored
}
