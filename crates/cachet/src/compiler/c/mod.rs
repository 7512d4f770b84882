//! The C family: gcc and clang compiling C, C++, Objective-C and assembler.
//!
//! Its parts, as the Rust family has them: [`args`] (what the command line means),
//! [`plan`] (what one compile runs and writes), [`key`] and [`direct`] (the keys of
//! preprocessor mode and direct mode), [`pipeline`] (hit or miss). [`identity`] tells gcc
//! from clang by probing the compiler; [`outputs`] moves an object and its dependency file
//! between the tree and an entry.

pub mod args;
pub mod direct;
pub mod identity;
pub mod key;
mod outputs;
mod pipeline;
pub mod plan;
pub mod reasons;
mod recipe;
mod remote;

use std::io;

use identity::{Identity, IdentityCache};
use key::key;
use plan::plan;

use super::job::{Invocation, Job, Outcome};
use super::pipeline::Context;

/// What the server keeps for gcc and clang between requests: who each compiler is.
#[derive(Default)]
pub struct CFamily {
    identities: IdentityCache,
}

impl CFamily {
    /// The compiler's identity when it is gcc or clang (probed once per binary, remembered).
    pub async fn identify(
        &self,
        context: &Context,
        invocation: &Invocation,
    ) -> io::Result<Option<Identity>> {
        self.identities
            .identify(&context.launcher, &invocation.compiler, &invocation.env)
            .await
    }

    /// Serves one compile by a compiler [`identify`](Self::identify) recognised.
    pub async fn compile(
        &self,
        context: &Context,
        job: &Job,
        identity: Identity,
    ) -> io::Result<Outcome> {
        let invocation = &job.invocation;
        let plan = match plan(&identity, invocation) {
            Ok(plan) => plan,
            Err(reason) => return Ok(Outcome::Uncacheable(reason.into())),
        };
        // `-march=native` and friends: the key needs the CPU the compiler would target.
        let identity = self
            .identities
            .with_native(
                &context.launcher,
                &invocation.compiler,
                &invocation.env,
                identity,
                &plan.args.expanded,
            )
            .await?;
        let _ = job.strip_colour.set(plan.strip_colour);
        let mut plan = plan;
        if invocation.env_var("SOURCE_DATE_EPOCH").is_some() {
            plan.fixed_dates = self
                .identities
                .honours_source_date_epoch(
                    &context.launcher,
                    &invocation.compiler,
                    &invocation.env,
                    &identity,
                    context.probe_dir.as_deref(),
                )
                .await?;
        }
        pipeline::compile(context, job, &identity, &plan).await
    }
}

#[cfg(test)]
mod tests;
