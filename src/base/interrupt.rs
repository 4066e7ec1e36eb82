//! Why a running script must stop, and the one place that says so: the step's deadline (on the
//! run's [`Clock`]) and the run's abort flag (Ctrl-C). The engine checks it in `on_progress`,
//! every wait sleeps through it, and the async runtime and the cloud give up on it, which is why
//! it sits below all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rhai::{EvalAltResult, Position};

use crate::base::clock::Clock;

/// Why a running script must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    TimedOut,
    Aborted,
}

impl Stop {
    pub fn token(self) -> &'static str {
        match self {
            Stop::TimedOut => "timed_out",
            Stop::Aborted => "aborted",
        }
    }

    /// Recognises the error a stop produced (non-catchable, so scripts cannot swallow it).
    pub fn from_error(err: &EvalAltResult) -> Option<Stop> {
        match err.unwrap_inner() {
            EvalAltResult::ErrorTerminated(token, _) => {
                match token.clone().into_string().ok()?.as_str() {
                    "timed_out" => Some(Stop::TimedOut),
                    "aborted" => Some(Stop::Aborted),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// The current step's deadline (on the run's [`Clock`]) and the run's abort flag (set by Ctrl-C
/// from another thread).
pub struct Interrupt {
    clock: Clock,
    abort: Arc<AtomicBool>,
    /// Ctrl-C presses since the last reset: the first stops the step, the second the run.
    presses: Arc<std::sync::atomic::AtomicUsize>,
}

impl Interrupt {
    pub fn new(abort: Arc<AtomicBool>) -> Self {
        Interrupt {
            clock: Clock::real(),
            abort,
            presses: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// The run's clock: real, or simulated in plans and drills (see [`crate::base::clock`]).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The press counter, for a signal handler to count Ctrl-C on.
    pub fn presses_counter(&self) -> &Arc<std::sync::atomic::AtomicUsize> {
        &self.presses
    }

    pub fn presses(&self) -> usize {
        self.presses.load(Ordering::SeqCst)
    }

    /// Forgets an interrupt the operator has dealt with (retry or continue after Ctrl-C).
    pub fn reset(&self) {
        self.presses.store(0, Ordering::SeqCst);
        self.abort.store(false, Ordering::SeqCst);
    }

    /// Sets the step deadline at a real instant (None clears it).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.clock.set_deadline(deadline);
    }

    /// Sets the step deadline `timeout` from now on the run's clock (None clears it). Saturating:
    /// a huge timeout means "no practical deadline", never an overflow.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.clock.set_timeout(timeout);
    }

    pub fn abort_flag(&self) -> &Arc<AtomicBool> {
        &self.abort
    }

    pub fn check(&self) -> Option<Stop> {
        if self.abort.load(Ordering::Relaxed) {
            return Some(Stop::Aborted);
        }
        self.clock.past_deadline().then_some(Stop::TimedOut)
    }

    /// [`check`](Self::check) as a script error at `pos`.
    pub fn check_at(&self, pos: Position) -> Result<(), Box<EvalAltResult>> {
        match self.check() {
            Some(stop) => Err(terminated(stop, pos)),
            None => Ok(()),
        }
    }

    /// Sleeps for `total`, waking early (with the reason) on timeout or abort. On a simulated
    /// clock it returns at once, the clock moved forward (to the deadline at most).
    pub fn sleep(&self, total: Duration) -> Result<(), Stop> {
        if let Some(stop) = self.check() {
            return Err(stop);
        }
        if self.clock.skip(total) {
            return self.check().map_or(Ok(()), Err);
        }
        let start = self.clock.now();
        loop {
            if let Some(stop) = self.check() {
                return Err(stop);
            }
            let left = total.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            let mut slice = left.min(Duration::from_millis(20));
            if let Some(d) = self.clock.remaining() {
                slice = slice.min(d.saturating_add(Duration::from_millis(1)));
            }
            std::thread::sleep(slice);
        }
    }
}

pub(crate) fn terminated(stop: Stop, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(stop.token().into(), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_wakes_at_the_deadline() {
        let i = Interrupt::new(Arc::new(AtomicBool::new(false)));
        i.set_timeout(Some(Duration::from_millis(30)));
        assert_eq!(i.sleep(Duration::from_secs(10)), Err(Stop::TimedOut));
    }

    #[test]
    fn a_huge_timeout_or_sleep_does_not_overflow() {
        let i = Interrupt::new(Arc::new(AtomicBool::new(false)));
        i.set_timeout(Some(Duration::MAX));
        assert_eq!(i.check(), None);
        i.clock().set_simulated(true);
        assert_eq!(i.sleep(Duration::MAX), Err(Stop::TimedOut));
    }

    #[test]
    fn abort_wins_over_everything() {
        let flag = Arc::new(AtomicBool::new(true));
        let i = Interrupt::new(flag);
        assert_eq!(i.check(), Some(Stop::Aborted));
    }
}
