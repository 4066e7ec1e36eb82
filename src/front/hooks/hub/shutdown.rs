//! Shutdown: stop taking alerts, let runs finish until a deadline, abort the rest, and wait
//! for the workers (`serve`'s SIGTERM drain, `hook`'s finish).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Hub, lock};

impl Hub {
    /// Stops taking alerts, lets running runs finish until `deadline`, then aborts the rest
    /// (each run records its abort) and waits for the workers. Queued runs are not started:
    /// each is recorded and escalated.
    pub(crate) fn drain(&self, deadline: Duration) -> DrainReport {
        self.accepting.store(false, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        // Closing the queue lets idle workers exit once it is empty.
        lock(&self.queue).take();
        // A deadline too far to represent is no deadline.
        let until = Instant::now().checked_add(deadline);
        let mut aborted = 0;
        loop {
            let running = lock(&self.runs).running();
            if running == 0 {
                break;
            }
            if until.is_some_and(|until| Instant::now() >= until) {
                aborted = lock(&self.runs).abort_all();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.join_workers();
        DrainReport { aborted }
    }

    /// Waits for the workers (the queue is closed: they exit once it is empty) and saves the
    /// guardrail state.
    fn join_workers(&self) {
        let workers: Vec<_> = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            let _ = w.join();
        }
        self.save_state_if_dirty();
    }

    /// Stops taking alerts, runs what was queued to the end, and waits for it (`runbook hook`).
    pub(crate) fn finish_queued(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        lock(&self.queue).take();
        self.join_workers();
    }

    /// Stops taking alerts (the first thing a SIGTERM does).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }
}

pub(crate) struct DrainReport {
    pub(crate) aborted: usize,
}
