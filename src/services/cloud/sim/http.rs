//! The declared HTTP endpoints the `health::` bindings answer for in the sim: healthy, down or
//! slow until a step, or flaky, as the fixture scripts them.

use serde::{Deserialize, Serialize};

use super::SimCloud;

/// A health endpoint: healthy by default, down or slow until a step, or flaky.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    #[serde(default = "default_status")]
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) body: String,
    #[serde(default)]
    pub(crate) latency_ms: u64,
    /// Answers 503 while the running step's number (1-based, as in `[3/8]`) is below this.
    #[serde(default)]
    pub(crate) down_before_step: Option<usize>,
    /// Answers after `slow_latency_ms` while the step number is below this.
    #[serde(default)]
    pub(crate) slow_before_step: Option<usize>,
    #[serde(default)]
    pub(crate) slow_latency_ms: u64,
    /// Every Nth request to it answers 500.
    #[serde(default)]
    pub(crate) flaky_every: Option<u64>,
}

fn default_status() -> u16 {
    200
}

impl SimCloud {
    /// The scripted answer of a declared endpoint at step number `step` (1-based; 0 outside a
    /// step): `(status, latency_ms, body)`, or None when `url` is not declared.
    pub(crate) fn http(&self, url: &str, step: usize) -> Option<(u16, u64, String)> {
        let index = self.fleet.endpoints.iter().position(|e| e.url == url)?;
        let e = &self.fleet.endpoints[index];
        let n = {
            let mut s = self.state.lock().ok()?;
            s.probes[index] += 1;
            s.probes[index]
        };
        if e.down_before_step.is_some_and(|d| step < d) {
            return Some((503, e.latency_ms, "service unavailable".into()));
        }
        if e.flaky_every.is_some_and(|k| k > 0 && n % k == 0) {
            return Some((500, e.latency_ms, "internal error".into()));
        }
        let latency = if e.slow_before_step.is_some_and(|d| step < d) {
            e.slow_latency_ms
        } else {
            e.latency_ms
        };
        Some((e.status, latency, e.body.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::SimCloud;

    #[test]
    fn endpoints_are_down_slow_or_flaky_as_scripted() {
        let sim = SimCloud::from_toml(
            "[[endpoints]]\nurl = \"http://api/health\"\nlatency_ms = 100\ndown_before_step = 2\nslow_before_step = 3\nslow_latency_ms = 900\n\n[[endpoints]]\nurl = \"http://api/flaky\"\nflaky_every = 3\n",
        )
        .unwrap();
        assert_eq!(
            sim.http("http://api/health", 1).unwrap().0,
            503,
            "down before step 2"
        );
        assert_eq!(
            sim.http("http://api/health", 2).unwrap(),
            (200, 900, String::new()),
            "slow at step 2"
        );
        assert_eq!(
            sim.http("http://api/health", 3).unwrap().1,
            100,
            "healthy from step 3"
        );
        let statuses: Vec<u16> = (0..6)
            .map(|_| sim.http("http://api/flaky", 1).unwrap().0)
            .collect();
        assert_eq!(statuses, vec![200, 200, 500, 200, 200, 500]);
        assert!(
            sim.http("http://elsewhere", 1).is_none(),
            "undeclared URLs are probed for real"
        );
    }
}
