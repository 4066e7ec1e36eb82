//! In-process tests of the hub's admission: no HTTP, no workers (so queued runs stay queued).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::front::hooks::{Alert, Source};

const TAG_TARGET: &str = r#"runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Mark the instance", |ctx| { ec2::tag(ctx.instance_id, #{ Remediated: "true" }); });
"#;

/// A hub on the built-in sim with one route (`cpu-high` runs `tag-target` on the alert's
/// instance) and a queue of one, whose workers are never started.
fn hub(dir: &Path) -> (Arc<Hub>, tokio::runtime::Runtime) {
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks/tag-target.rhai"), TAG_TARGET).unwrap();
    std::fs::write(
        dir.join("runbook.toml"),
        "default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hooks.toml"),
        "[server]\nworkers = 1\nqueue = 1\n\n[guardrails]\ncooldown = \"10m\"\n\n[[route]]\nname = \"cpu\"\nalert = \"cpu-high\"\nrunbook = \"tag-target@1.0.0\"\nenvironment = \"sim\"\nparams = { instance_id = \"{labels.instance_id}\" }\ntarget = \"{labels.instance_id}\"\n",
    )
    .unwrap();
    let config = crate::data::config::Config::load(Some(&dir.join("runbook.toml"))).unwrap();
    let hooks = crate::front::hooks::config::Hooks::load(&dir.join("hooks.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hub = Hub::new(
        hooks,
        vec![dir.join("runbooks")],
        config,
        rt.handle().clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (hub, rt)
}

fn alert(instance: &str) -> Alert {
    let labels = BTreeMap::from([("instance_id".to_string(), instance.to_string())]);
    Alert {
        source: Source::Generic,
        name: "cpu-high".into(),
        firing: true,
        fingerprint: Alert::fingerprint_of(Source::Generic, "cpu-high", &labels),
        labels,
        annotations: BTreeMap::new(),
        starts_at: None,
    }
}

fn admit(hub: &Arc<Hub>, rt: &tokio::runtime::Runtime, alert: Alert) -> AlertOutcome {
    let mut outcomes = rt.block_on(hub.admit_all(vec![alert], "test", Instant::now()));
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

#[test]
fn the_same_alert_twice_is_admitted_once_and_deduplicated_after() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, rt) = hub(dir.path());
    let first = admit(&hub, &rt, alert("i-0a1b2c3d4e5f60001"));
    assert_eq!(first.outcome, "accepted", "{:?}", first.reason);
    assert!(first.run_id.is_some());
    let again = admit(&hub, &rt, alert("i-0a1b2c3d4e5f60001"));
    assert_eq!(again.outcome, "deduplicated");
    assert!(again.run_id.is_none());
    assert!(!again.retry(), "a duplicate is answered, not retried");
}

#[test]
fn a_full_queue_refuses_for_a_retry_and_forgets_the_admission() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, rt) = hub(dir.path());
    let first = admit(&hub, &rt, alert("i-0a1b2c3d4e5f60001"));
    assert_eq!(first.outcome, "accepted", "{:?}", first.reason);
    let full = admit(&hub, &rt, alert("i-0a1b2c3d4e5f60002"));
    assert_eq!(full.outcome, "queue_full");
    assert_eq!(full.reason.as_deref(), Some("queue_full"));
    assert!(full.retry(), "a full queue is a 503: the sender retries");
    // The admission was undone: the retry is judged afresh, not deduplicated away.
    let retried = admit(&hub, &rt, alert("i-0a1b2c3d4e5f60002"));
    assert_eq!(retried.outcome, "queue_full");
    let runs = hub.runs_list(10);
    assert!(
        runs.iter().any(|r| r.status == "not_started"),
        "{:?}",
        runs.iter().map(|r| &r.status).collect::<Vec<_>>()
    );
}

#[test]
fn a_resolved_or_unrouted_alert_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, rt) = hub(dir.path());
    let mut resolved = alert("i-0a1b2c3d4e5f60001");
    resolved.firing = false;
    assert_eq!(admit(&hub, &rt, resolved).outcome, "resolved");
    let mut other = alert("i-0a1b2c3d4e5f60001");
    other.name = "disk-full".into();
    assert_eq!(admit(&hub, &rt, other).outcome, "unmatched");
    assert!(hub.runs_list(10).is_empty());
}

#[test]
fn a_forgotten_replay_key_is_judged_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _rt) = hub(dir.path());
    let now = chrono::Utc::now().timestamp();
    let window = std::time::Duration::from_secs(300);
    assert!(hub.first_sighting("sns:m-1", now, window).is_ok());
    assert!(
        hub.first_sighting("sns:m-1", now, window).is_err(),
        "a replay"
    );
    hub.forget("sns:m-1");
    assert!(hub.first_sighting("sns:m-1", now, window).is_ok());
}
