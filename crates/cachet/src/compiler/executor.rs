//! Where a compile's compiler processes run: the seam that remote execution plugs into.
//!
//! A family hands every process of a compile (the real compile, a preprocessor run) to its
//! job's [`Executor`]. Today the only one is [`LocalExecutor`]: the server's launcher,
//! bound to the calling build's jobserver.

use std::io;

use async_trait::async_trait;
use cachet_jobserver::Jobserver;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::process::{CommandSpec, Launcher, OutputChunk, ProcessOutput};

/// Runs the compiler processes of one compile.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `spec` to its end. Output chunks also go to `stream` as they arrive. When
    /// `cancel` fires, the process is killed and this returns a `process::Cancelled` error.
    async fn run(
        &self,
        spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
    ) -> io::Result<ProcessOutput>;
}

/// Runs processes on this machine under the server's jobserver and the build's.
pub struct LocalExecutor {
    launcher: Launcher,
    build: Option<Jobserver>,
}

impl LocalExecutor {
    /// `build` is the calling build's jobserver, when its client passed a usable one.
    pub fn new(launcher: Launcher, build: Option<Jobserver>) -> LocalExecutor {
        LocalExecutor { launcher, build }
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    async fn run(
        &self,
        spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
    ) -> io::Result<ProcessOutput> {
        self.launcher
            .run_compiler(spec, stream, cancel, self.build.as_ref())
            .await
    }
}
