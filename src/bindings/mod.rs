//! Host APIs a runbook can call, one plugin module per concern.
//!
//! Every function here is a documented `#[export_module]` function: its doc comment is the runbook
//! author's API reference (`runbook docs` prints them). Each one that touches the world goes through
//! [`crate::sandbox::recorder::call`] with its static [`Binding`](crate::sandbox::recorder::Binding) declaration;
//! none writes the transcript or looks at the mode itself.

use std::rc::Rc;

use rhai::Engine;
use rhai::plugin::*;

use crate::sandbox::engine::{Host, ImportRoots};

pub(crate) mod autoscaling;
pub(crate) mod cloudwatch;
pub(crate) mod core;
pub(crate) mod ec2;
pub(crate) mod elb;
pub(crate) mod health;
pub(crate) mod local;
pub(crate) mod slack;
pub(crate) mod ssm;

/// Namespaces taken by bindings: an `import ... as <alias>` may not reuse them.
pub(crate) const NAMESPACES: &[&str] = &[
    "json",
    "notes",
    "ec2",
    "ssm",
    "slack",
    "teams",
    "health",
    "elb",
    "cloudwatch",
    "autoscaling",
    "local",
];

/// The engine a runbook runs in: the sandbox ([`crate::sandbox::engine::sandbox`]) with the declaration
/// functions and every binding, registered in that order. Every runbook, the REPL and
/// `runbook docs` get theirs here, so all see the same functions.
pub(crate) fn engine(host: &Rc<Host>, roots: ImportRoots) -> Engine {
    let mut engine = crate::sandbox::engine::sandbox(host, roots);
    crate::sandbox::declare::register_declarations(&mut engine);
    register(&mut engine);
    engine
}

/// Registers every binding module on `engine`. Called once, from [`engine`]. Each module is
/// built once per thread and shared by every engine after (see
/// [`crate::sandbox::engine::shared_module`]): they hold functions only, and each call reaches
/// its run through the engine's own host.
fn register(engine: &mut Engine) {
    use crate::sandbox::engine::shared_module;
    engine.register_global_module(shared_module("core", None, || {
        exported_module!(core::core_api).into()
    }));
    let namespace = |engine: &mut Engine, name: &'static str, build: fn() -> Module| {
        engine.register_static_module(name, shared_module(name, Some(name), || build().into()));
    };
    namespace(engine, "json", || exported_module!(core::json_api));
    namespace(engine, "notes", || exported_module!(core::notes_api));
    namespace(engine, "ec2", || exported_module!(ec2::ec2_api));
    namespace(engine, "ssm", || exported_module!(ssm::ssm_api));
    namespace(engine, "slack", || exported_module!(slack::slack_api));
    namespace(engine, "teams", || exported_module!(slack::teams_api));
    namespace(engine, "health", || exported_module!(health::health_api));
    namespace(engine, "elb", || exported_module!(elb::elb_api));
    namespace(engine, "cloudwatch", || {
        exported_module!(cloudwatch::cloudwatch_api)
    });
    namespace(engine, "autoscaling", || {
        exported_module!(autoscaling::autoscaling_api)
    });
    namespace(engine, "local", || exported_module!(local::local_api));
}

/// Argument helpers shared by the cloud bindings. Bad arguments are script bugs: they fail the
/// step with a `bad_argument` error at the call, before anything is sent.
pub(crate) mod args {
    use std::time::Duration;

    use rhai::{Dynamic, Map};

    use crate::base::error::BindingError;
    use crate::services::cloud::Tags;

    fn bad(message: String) -> BindingError {
        BindingError::new("bad_argument", message)
    }

    /// Instance ids from a string, an array of strings, or maps with an `id` (what `ec2::find` returns).
    pub(crate) fn ids(value: &Dynamic, what: &str) -> Result<Vec<String>, BindingError> {
        let one = |v: &Dynamic| -> Option<String> {
            if v.is_string() {
                return v.clone().into_string().ok();
            }
            v.clone()
                .try_cast::<Map>()
                .and_then(|m| m.get("id").and_then(|id| id.clone().into_string().ok()))
        };
        let out = match value.clone().try_cast::<rhai::Array>() {
            Some(items) => items.iter().map(one).collect::<Option<Vec<_>>>(),
            None => one(value).map(|id| vec![id]),
        };
        match out {
            Some(ids) if !ids.is_empty() && ids.iter().all(|i| !i.is_empty()) => Ok(ids),
            _ => Err(bad(format!(
                "{what} must be an id, an array of ids, or instances from ec2::find"
            ))),
        }
    }

    pub(crate) fn tags(value: Option<&Dynamic>) -> Result<Tags, BindingError> {
        let Some(value) = value else {
            return Ok(Tags::new());
        };
        let map = value.clone().try_cast::<Map>().ok_or_else(|| {
            bad("tags must be a map such as #{ Incident: \"2025-0914-001\" }".into())
        })?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    pub(crate) fn string(opts: &Map, key: &str) -> Result<Option<String>, BindingError> {
        match opts.get(key) {
            None => Ok(None),
            Some(v) if v.is_unit() => Ok(None),
            Some(v) => v
                .clone()
                .into_string()
                .map(Some)
                .map_err(|t| bad(format!("`{key}` must be a string, not {t}"))),
        }
    }

    pub(crate) fn strings(opts: &Map, key: &str) -> Result<Vec<String>, BindingError> {
        match opts.get(key) {
            None => Ok(Vec::new()),
            Some(v) if v.is_string() => Ok(vec![v.to_string()]),
            Some(v) => v
                .clone()
                .try_cast::<rhai::Array>()
                .and_then(|a| {
                    a.into_iter()
                        .map(|x| x.into_string().ok())
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad(format!("`{key}` must be a string or an array of strings"))),
        }
    }

    pub(crate) fn boolean(opts: &Map, key: &str, default: bool) -> Result<bool, BindingError> {
        match opts.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .map_err(|t| bad(format!("`{key}` must be true or false, not {t}"))),
        }
    }

    pub(crate) fn int(opts: &Map, key: &str, default: i64) -> Result<i64, BindingError> {
        match opts.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_int()
                .map_err(|t| bad(format!("`{key}` must be an int, not {t}"))),
        }
    }

    pub(crate) fn duration(
        opts: &Map,
        key: &str,
        default: Duration,
    ) -> Result<Duration, BindingError> {
        match opts.get(key) {
            None => Ok(default),
            Some(v) => {
                let text = v.to_string();
                crate::base::clock::parse_duration(&text).map_err(|e| bad(format!("`{key}`: {e}")))
            }
        }
    }

    /// A wait's own `timeout` option, None when not given: the wait is then bounded by the step's
    /// deadline (see [`crate::base::clock::Clock::wait_limit`]), never by a second default.
    pub(crate) fn wait_timeout(opts: &Map, key: &str) -> Result<Option<Duration>, BindingError> {
        match opts.get(key) {
            None => Ok(None),
            Some(_) => duration(opts, key, Duration::ZERO).map(Some),
        }
    }

    /// The options of a plain wait, `#{ timeout, every }` and nothing else: its own `timeout`
    /// (None: the step's deadline bounds it) and its polling interval.
    pub(crate) fn wait_options(
        opts: &Map,
        default_every: Duration,
    ) -> Result<(Option<Duration>, Duration), BindingError> {
        known(opts, &["timeout", "every"])?;
        Ok((
            wait_timeout(opts, "timeout")?,
            duration(opts, "every", default_every)?,
        ))
    }

    /// What a call records for a wait's `timeout` option: as given, or that the step's deadline
    /// bounds it (never the time left, which differs between a run and its resume).
    pub(crate) fn wait_timeout_recorded(timeout: Option<Duration>) -> serde_json::Value {
        match timeout {
            Some(t) => humantime::format_duration(t).to_string().into(),
            None => "step deadline".into(),
        }
    }

    /// Any serializable result as a script value.
    pub(crate) fn to_dynamic<T: serde::Serialize>(value: &T) -> Result<Dynamic, BindingError> {
        rhai::serde::to_dynamic(value)
            .map_err(|e| BindingError::new("internal", format!("cannot convert a result: {e}")))
    }

    /// Refuses option keys a binding does not know (a typo must not silently change behaviour).
    pub(crate) fn known(opts: &Map, allowed: &[&str]) -> Result<(), BindingError> {
        match opts.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(bad(format!(
                "unknown option `{k}`; known: {}",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// How long a wait in a binding may wait (its `timeout`, clipped to the step's deadline; see
/// [`crate::base::clock::Clock::wait_limit`]), logged in the transcript so the bound that applied is on
/// record.
pub(crate) fn wait_limit(
    host: &crate::sandbox::engine::Host,
    asked: Option<std::time::Duration>,
) -> crate::base::clock::WaitLimit {
    let limit = host.interrupt.clock().wait_limit(asked);
    host.recorder.log("wait", &limit.describe());
    limit
}

/// The error of a wait whose `limit` ran out with `what` (`detail`) still pending. A wait bounded
/// by the step's deadline first waits the deadline out, so the step ends `timed_out` (as its
/// timeout says) with a message naming the wait; its own timeout fails the call (`WaiterTimeout`).
pub(crate) async fn wait_ran_out(
    clock: &crate::base::clock::Clock,
    limit: &crate::base::clock::WaitLimit,
    what: &str,
    detail: &str,
) -> crate::base::error::BindingError {
    let why = limit.ran_out(what, detail);
    if limit.bound != crate::base::clock::WaitBound::StepDeadline {
        return crate::base::error::BindingError::new("WaiterTimeout", why);
    }
    clock.note_ended_wait(why.clone());
    // A hair past the deadline, so the step's deadline (not this sleep) is what ends the wait.
    let left = clock.remaining().unwrap_or_default();
    clock
        .sleep(left.saturating_add(std::time::Duration::from_millis(5)))
        .await;
    crate::base::error::BindingError::new(crate::base::interrupt::Stop::TimedOut.token(), why)
}
