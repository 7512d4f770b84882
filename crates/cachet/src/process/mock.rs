//! A process runner for unit tests: records every spec and answers from a script.

use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::Exit;
use super::{CommandSpec, OutputChunk, ProcessOutput, ProcessRunner};

type Script = dyn Fn(&CommandSpec) -> io::Result<ProcessOutput> + Send + Sync;

#[derive(Clone)]
pub struct MockRunner {
    calls: Arc<Mutex<Vec<CommandSpec>>>,
    script: Arc<Script>,
}

impl MockRunner {
    /// `script` plays the child: it may write files, and returns what the child printed.
    pub fn new(
        script: impl Fn(&CommandSpec) -> io::Result<ProcessOutput> + Send + Sync + 'static,
    ) -> Self {
        MockRunner {
            calls: Arc::default(),
            script: Arc::new(script),
        }
    }

    pub fn calls(&self) -> Vec<CommandSpec> {
        self.calls.lock().unwrap().clone()
    }
}

pub fn output(code: i32, stdout: &[u8], stderr: &[u8]) -> ProcessOutput {
    ProcessOutput {
        exit: Exit::Code(code),
        stdout: stdout.to_vec(),
        stderr: stderr.to_vec(),
        max_rss: None,
    }
}

#[async_trait]
impl ProcessRunner for MockRunner {
    async fn run(
        &self,
        spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        _cancel: CancellationToken,
    ) -> io::Result<ProcessOutput> {
        self.calls.lock().unwrap().push(spec.clone());
        let out = (self.script)(&spec)?;
        if let Some(stream) = stream {
            if !out.stdout.is_empty() {
                let _ = stream.send(OutputChunk::Stdout(out.stdout.clone()));
            }
            if !out.stderr.is_empty() {
                let _ = stream.send(OutputChunk::Stderr(out.stderr.clone()));
            }
        }
        Ok(out)
    }
}
