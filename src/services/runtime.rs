//! The async side of the host: one tokio runtime, made on first use, on which bindings run their
//! network calls (AWS SDK, Slack, Teams, health probes) from the script thread.
//!
//! The Rhai engine runs on a plain thread and bindings block on this runtime (calling `block_on`
//! from inside a tokio worker would panic). A current-thread runtime is enough: concurrency (fan-out,
//! latency sampling) comes from polling many requests at once, not from threads.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::base::error::BindingError;
use crate::base::interrupt::{Interrupt, Stop};

#[derive(Default)]
pub struct AsyncIo {
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl AsyncIo {
    pub fn runtime(&self) -> Result<&tokio::runtime::Runtime, BindingError> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                BindingError::new("runtime", format!("cannot start the async runtime: {e}"))
            })?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    /// Runs `fut` to completion, giving up when the step times out or the run is aborted
    /// (checked every 20 ms while the future is pending).
    pub fn block_on<T>(
        &self,
        interrupt: &Interrupt,
        fut: impl Future<Output = Result<T, BindingError>>,
    ) -> Result<T, BindingError> {
        let rt = self.runtime()?;
        rt.block_on(async {
            tokio::select! {
                result = fut => result,
                stop = watch(interrupt) => Err(BindingError::new(stop.token(), "interrupted while waiting for a reply")),
            }
        })
    }
}

async fn watch(interrupt: &Interrupt) -> Stop {
    loop {
        if let Some(stop) = interrupt.check() {
            return stop;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
