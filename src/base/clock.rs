//! The run's clock and the one duration parser.
//!
//! A run measures time on a [`Clock`]: real for runs that act on the world, *simulated* for plans
//! and drills. A simulated clock still moves with real time (so an endless loop still reaches its
//! step's timeout), but every wait (`sleep`, `wait_until`, waiters, retry backoff, the simulated
//! cloud's latency) advances it at once instead of sleeping: a plan never sleeps, and a drill of a
//! ten-minute recovery takes milliseconds while its transcript still says ten minutes.
//!
//! The step deadline lives here too, so a simulated wait stops exactly at it. All arithmetic is on
//! `Duration`s since the clock's origin, saturating: no duration, however large, can overflow.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest duration a runbook, a step option or a parameter may name. Anything longer is a
/// typo (or an attack on the arithmetic), never an incident plan.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The one parser for duration text (`"500ms"`, `"2m"`, `"1h 30m"`): humantime's syntax, refused
/// above [`MAX_DURATION`] with a message that says so.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration such as \"500ms\", \"90s\" or \"2m\" ({e})")
    })?;
    check_duration(d).map_err(|why| format!("{text:?} {why}"))
}

/// Refuses durations above [`MAX_DURATION`] (for durations given as numbers).
pub(crate) fn check_duration(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err(format!(
            "is longer than the maximum duration of {} (366 days)",
            humantime::format_duration(MAX_DURATION)
        ))
    } else {
        Ok(d)
    }
}

/// The wall-clock time now, in UTC with milliseconds: the one timestamp format of the project
/// (transcript `ts`, approvals, notes, the hook server's run table). Wall time, not the run's
/// [`Clock`]: a simulated run still stamps when things really happened.
pub(crate) fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How long a wait with no `timeout` of its own may wait when no step deadline bounds it (the
/// REPL, a call outside any step): as long as a step with the default timeout may run. Inside a
/// step, such a wait waits until the step's deadline instead (see [`Clock::wait_limit`]).
pub(crate) const WAIT_CAP: Duration = Duration::from_secs(10 * 60);

/// What bounds a wait (`wait_until`, the `ec2::` waiters, `ssm::run_command`'s result polling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitBound {
    /// Its own `timeout` option, shorter than what the step has left: running out fails the
    /// call (`WaiterTimeout`), which the script may catch.
    Own,
    /// The step's deadline: no `timeout` option, or one longer than the step has left (clipped).
    /// Running out ends the step `timed_out`, as the step's timeout does.
    StepDeadline,
    /// No `timeout` option and no step deadline: [`WAIT_CAP`].
    Cap,
}

/// How long one wait may wait, and why (see [`Clock::wait_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitLimit {
    pub limit: Duration,
    pub bound: WaitBound,
    /// The wait's own `timeout` option, if it had one.
    pub asked: Option<Duration>,
}

/// A duration as a person reads it: to the nearest second from ten seconds up (the time a step
/// has left is measured in nanoseconds), to the millisecond below.
fn shown(d: Duration) -> humantime::FormattedDuration {
    let rounded = if d >= Duration::from_secs(10) {
        Duration::from_secs(
            d.as_secs()
                .saturating_add(u64::from(d.subsec_millis() >= 500)),
        )
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded)
}

impl WaitLimit {
    /// One line saying which bound applies (what the transcript's `wait` log records).
    pub fn describe(&self) -> String {
        let limit = shown(self.limit);
        match (self.bound, self.asked) {
            (WaitBound::Own, _) => format!("waits at most {limit} (its `timeout`)"),
            (WaitBound::StepDeadline, None) => {
                format!("waits at most {limit}: until the step's deadline (no `timeout` given)")
            }
            (WaitBound::StepDeadline, Some(asked)) => format!(
                "waits at most {limit}: until the step's deadline (its `timeout` of {} is longer than the step has left)",
                humantime::format_duration(asked)
            ),
            (WaitBound::Cap, _) => format!(
                "waits at most {limit}: no `timeout` given and no step deadline, so the cap for waits applies"
            ),
        }
    }

    /// Why the wait ended when its limit ran out with `what` still pending: the message of the
    /// call's error, and for [`WaitBound::StepDeadline`] the step's own message too.
    /// How long a poller sleeps before its next check, `elapsed` into the wait, or None when the
    /// wait is over. A wait bounded by its own `timeout` (or the cap) checks a last time at the
    /// limit itself, so "not ok after 3m" means it was checked at 3m, not 15 s before. A wait
    /// bounded by the step's deadline gives up while a whole interval no longer fits: the
    /// deadline, not a last check racing it, must end the step, so the step says which wait it
    /// ended (see `bindings::wait_ran_out`).
    pub fn next_poll(&self, elapsed: Duration, every: Duration) -> Option<Duration> {
        let left = self.limit.checked_sub(elapsed).filter(|l| !l.is_zero())?;
        match self.bound {
            WaitBound::StepDeadline => (every <= left).then_some(every),
            WaitBound::Own | WaitBound::Cap => Some(every.min(left)),
        }
    }

    pub fn ran_out(&self, what: &str, detail: &str) -> String {
        let limit = shown(self.limit);
        match (self.bound, self.asked) {
            (WaitBound::StepDeadline, None) => {
                format!("the step's deadline ended the wait after {limit}: {what}: {detail}")
            }
            (WaitBound::StepDeadline, Some(asked)) => format!(
                "the step's deadline ended the wait after {limit}, before the wait's own timeout of {}: {what}: {detail}",
                humantime::format_duration(asked)
            ),
            (WaitBound::Own, _) | (WaitBound::Cap, _) => format!("{what} after {limit}: {detail}"),
        }
    }
}

/// No deadline.
const NONE: u64 = u64::MAX;

struct Inner {
    origin: Instant,
    simulated: AtomicBool,
    /// Nanoseconds skipped by simulated waits.
    skipped: AtomicU64,
    /// The current step's deadline, in nanoseconds since `origin` ([`NONE`] when there is none).
    deadline: AtomicU64,
    /// Why a wait ended at the step deadline, for the step's message (cleared with the deadline).
    ended_wait: Mutex<Option<String>>,
}

/// A run's clock (cheap to clone; clones share the same time).
#[derive(Clone)]
pub struct Clock(Arc<Inner>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("simulated", &self.is_simulated())
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::real()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Clock {
    pub fn real() -> Self {
        Clock(Arc::new(Inner {
            origin: Instant::now(),
            simulated: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
            deadline: AtomicU64::new(NONE),
            ended_wait: Mutex::new(None),
        }))
    }

    /// Switches to simulated time (plans, drills) or back.
    pub fn set_simulated(&self, on: bool) {
        self.0.simulated.store(on, Ordering::SeqCst);
    }

    pub fn is_simulated(&self) -> bool {
        self.0.simulated.load(Ordering::SeqCst)
    }

    /// `"simulated"` or `"real"` (what `run_started` records).
    pub fn kind(&self) -> &'static str {
        if self.is_simulated() {
            "simulated"
        } else {
            "real"
        }
    }

    /// Time since the clock started: real time plus every simulated wait.
    pub fn elapsed(&self) -> Duration {
        self.0
            .origin
            .elapsed()
            .saturating_add(Duration::from_nanos(self.0.skipped.load(Ordering::SeqCst)))
    }

    /// A point in this clock's time, to measure from.
    pub fn now(&self) -> Stamp {
        Stamp {
            clock: self.clone(),
            at: self.elapsed(),
        }
    }

    /// Sets (or clears) the step deadline, `timeout` from now (saturating: never overflows).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let at = timeout.map_or(NONE, |t| nanos(self.elapsed().saturating_add(t)));
        self.0.deadline.store(at, Ordering::SeqCst);
        if timeout.is_some() {
            // A new deadline: a note about an earlier one is stale. (Clearing the deadline after a
            // step keeps the note for the executor to read.)
            self.take_ended_wait();
        }
    }

    /// How long a wait may wait: its own `timeout` (`asked`) when the step has that long left,
    /// else until the step's deadline; with neither, [`WAIT_CAP`]. A wait never outlives its
    /// step silently: the step's deadline, not a second timeout, is what normally ends it.
    pub fn wait_limit(&self, asked: Option<Duration>) -> WaitLimit {
        let (limit, bound) = match (asked, self.remaining()) {
            (Some(a), Some(left)) if a <= left => (a, WaitBound::Own),
            (_, Some(left)) => (left, WaitBound::StepDeadline),
            (Some(a), None) => (a, WaitBound::Own),
            (None, None) => (WAIT_CAP, WaitBound::Cap),
        };
        WaitLimit {
            limit,
            bound,
            asked,
        }
    }

    /// Notes that a wait ran until the step's deadline (`why`, from [`WaitLimit::ran_out`]): the
    /// step's `timed_out` message then says the deadline ended that wait.
    pub fn note_ended_wait(&self, why: String) {
        let mut slot = self.0.ended_wait.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(why);
    }

    /// The note of [`Self::note_ended_wait`], once.
    pub fn take_ended_wait(&self) -> Option<String> {
        self.0
            .ended_wait
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Sets the step deadline at a real instant (converted to this clock's time).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.set_timeout(deadline.map(|d| d.saturating_duration_since(Instant::now())));
    }

    /// Time left before the step deadline (None: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        match self.0.deadline.load(Ordering::SeqCst) {
            NONE => None,
            at => Some(Duration::from_nanos(at).saturating_sub(self.elapsed())),
        }
    }

    /// Whether the step deadline has passed.
    pub fn past_deadline(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }

    /// In simulated time, moves the clock forward by `d` (never past the step deadline) and
    /// returns true; in real time, does nothing and returns false.
    pub fn skip(&self, d: Duration) -> bool {
        if !self.is_simulated() {
            return false;
        }
        let d = match self.remaining() {
            Some(left) => d.min(left),
            None => d,
        };
        let _ = self
            .0
            .skipped
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                Some(s.saturating_add(nanos(d)))
            });
        true
    }

    /// Runs `f` on simulated time (an interactive step preview) and then puts the clock back as
    /// it was: what `f` waited does not count in the run's own durations.
    pub fn simulate<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = self.is_simulated();
        let skipped = self.0.skipped.load(Ordering::SeqCst);
        let deadline = self.0.deadline.load(Ordering::SeqCst);
        self.set_simulated(true);
        let out = f();
        self.set_simulated(was);
        self.0.skipped.store(skipped, Ordering::SeqCst);
        self.0.deadline.store(deadline, Ordering::SeqCst);
        out
    }

    /// Waits `d` on the async runtime: at once in simulated time (yielding, so an interrupt
    /// watcher gets its turn), a real sleep otherwise.
    pub async fn sleep(&self, d: Duration) {
        if self.skip(d) {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(d).await;
        }
    }
}

/// A point in a [`Clock`]'s time.
#[derive(Debug, Clone)]
pub struct Stamp {
    clock: Clock,
    at: Duration,
}

impl Stamp {
    /// Time passed on the clock since this point.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed().saturating_sub(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_with_its_own_timeout_checks_a_last_time_at_the_limit_itself() {
        let s = Duration::from_secs;
        let own = WaitLimit {
            limit: s(180),
            bound: WaitBound::Own,
            asked: Some(s(180)),
        };
        assert_eq!(own.next_poll(s(0), s(15)), Some(s(15)));
        // 165 s in, a whole interval no longer fits: the last check is at 180 s, not never.
        assert_eq!(own.next_poll(s(165), s(15)), Some(s(15)));
        assert_eq!(own.next_poll(s(170), s(15)), Some(s(10)));
        assert_eq!(own.next_poll(s(180), s(15)), None);
        // The step's deadline must end the step itself: no last check racing it.
        let deadline = WaitLimit {
            bound: WaitBound::StepDeadline,
            ..own
        };
        assert_eq!(deadline.next_poll(s(165), s(15)), Some(s(15)));
        assert_eq!(deadline.next_poll(s(170), s(15)), None);
    }

    #[test]
    fn durations_over_the_maximum_are_refused_with_a_clear_message() {
        let err = parse_duration("18446744073709551615s").unwrap_err();
        assert!(err.contains("maximum duration"), "{err}");
        let err = parse_duration("300000000000y").unwrap_err();
        assert!(
            err.contains("maximum") || err.contains("not a duration"),
            "{err}"
        );
        assert_eq!(parse_duration("366days").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
        assert!(
            parse_duration("banana")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn a_simulated_clock_skips_waits_but_not_past_the_deadline() {
        let c = Clock::real();
        c.set_simulated(true);
        c.set_timeout(Some(Duration::from_secs(60)));
        assert!(c.skip(Duration::from_secs(30)));
        assert!(c.elapsed() >= Duration::from_secs(30));
        assert!(!c.past_deadline());
        c.skip(Duration::from_secs(3600));
        assert!(c.past_deadline());
        assert!(c.elapsed() < Duration::from_secs(61));
        c.set_timeout(Some(Duration::MAX));
        assert!(!c.past_deadline());
    }

    #[test]
    fn a_simulated_preview_leaves_a_real_clock_as_it_was() {
        let c = Clock::real();
        let before = c.elapsed();
        let waited = c.simulate(|| {
            assert!(c.skip(Duration::from_secs(600)));
            c.elapsed()
        });
        assert!(waited >= Duration::from_secs(600));
        assert!(!c.is_simulated());
        assert!(c.elapsed() < before + Duration::from_secs(600));
    }

    #[test]
    fn a_wait_outside_any_step_is_bounded_by_the_cap() {
        let c = Clock::real();
        let limit = c.wait_limit(None);
        assert_eq!((limit.limit, limit.bound), (WAIT_CAP, WaitBound::Cap));
        assert!(
            limit.describe().contains("no step deadline"),
            "{}",
            limit.describe()
        );
        // A timeout of its own still applies, even a long one: it was asked for.
        let asked = Duration::from_secs(3600);
        let own = c.wait_limit(Some(asked));
        assert_eq!((own.limit, own.bound), (asked, WaitBound::Own));
    }

    #[test]
    fn a_wait_inside_a_step_waits_until_its_deadline_and_a_longer_timeout_is_cut_to_it() {
        let c = Clock::real();
        c.set_simulated(true);
        c.set_timeout(Some(Duration::from_secs(30 * 60)));
        c.skip(Duration::from_secs(10 * 60));
        let default = c.wait_limit(None);
        assert_eq!(default.bound, WaitBound::StepDeadline);
        assert!(default.limit <= Duration::from_secs(20 * 60));
        assert!(default.limit > Duration::from_secs(19 * 60));
        let clipped = c.wait_limit(Some(Duration::from_secs(3600)));
        assert_eq!(clipped.bound, WaitBound::StepDeadline);
        // (Real time moves on between the two calls, a few microseconds.)
        assert!(clipped.limit <= default.limit);
        assert!(clipped.limit > Duration::from_secs(19 * 60));
        assert!(
            clipped
                .ran_out("x", "y")
                .contains("before the wait's own timeout of 1h")
        );
        let shorter = c.wait_limit(Some(Duration::from_secs(60)));
        assert_eq!(shorter.bound, WaitBound::Own);
        assert_eq!(shorter.ran_out("x", "y"), "x after 1m: y");
    }

    #[test]
    fn a_new_deadline_forgets_the_note_of_a_wait_the_last_one_ended() {
        let c = Clock::real();
        c.note_ended_wait("ended".into());
        c.set_timeout(None);
        assert_eq!(c.take_ended_wait().as_deref(), Some("ended"));
        assert_eq!(c.take_ended_wait(), None);
        c.note_ended_wait("ended".into());
        c.set_timeout(Some(Duration::from_secs(1)));
        assert_eq!(c.take_ended_wait(), None);
    }

    #[test]
    fn a_real_clock_does_not_skip() {
        let c = Clock::real();
        assert!(!c.skip(Duration::from_secs(30)));
        assert!(c.elapsed() < Duration::from_secs(30));
    }
}
