//! Observers of a run as it goes. Today one: the Slack run lifecycle a runbook switches on in
//! its metadata. The observer decides what to say when; the message itself goes out through the
//! `slack::` bindings' [`lifecycle_post`], so it is recorded, planned and redacted like any post.

use std::rc::Rc;

use crate::bindings::slack::lifecycle_post;
use crate::data::transcript::{RunStatus, StepStatus};
use crate::run::executor::RunObserver;
use crate::runbook::Runbook;
use crate::sandbox::declare::Step;
use crate::sandbox::engine::{ErrorInfo, Host};

/// Run lifecycle notifications a runbook switches on with `notify: #{ slack: "#channel" }`: one
/// parent message when the run starts, step failures and the final status as replies in its
/// thread (and the parent updated with the outcome). Delivery failures are recorded, never fatal.
pub(crate) struct SlackLifecycle {
    host: Rc<Host>,
    channel: String,
    thread_ts: Option<String>,
    /// The parent message went out (through the webhook it has no `ts`, so no thread).
    started: bool,
    headline: String,
}

impl SlackLifecycle {
    /// The lifecycle notifier a runbook asks for in its metadata (`notify: #{ slack: ... }`).
    pub(crate) fn for_runbook(rb: &Runbook) -> Option<Box<dyn RunObserver>> {
        let channel = rb.meta.notify_slack.clone()?;
        Some(Box::new(SlackLifecycle::new(rb.host.clone(), channel)))
    }

    pub(crate) fn new(host: Rc<Host>, channel: String) -> Self {
        SlackLifecycle {
            host,
            channel,
            thread_ts: None,
            started: false,
            headline: String::new(),
        }
    }

    fn send(&self, method: &'static str, text: String, thread: bool) -> Option<String> {
        let thread_ts = if thread { self.thread_ts.clone() } else { None };
        let update_ts = (method == "chat.update")
            .then(|| self.thread_ts.clone())
            .flatten();
        lifecycle_post(
            &self.host,
            method,
            &self.channel,
            thread_ts,
            update_ts,
            text,
        )
    }
}

impl RunObserver for SlackLifecycle {
    fn run_started(&mut self, headline: String) {
        self.headline = headline.clone();
        let sent = self.send("chat.postMessage", format!("▶ {headline}"), false);
        self.started = sent.is_some();
        self.thread_ts = sent.filter(|ts| !ts.is_empty());
    }

    fn step_finished(&mut self, step: &Step, status: StepStatus, error: Option<&ErrorInfo>) {
        if matches!(status, StepStatus::Ok | StepStatus::Skipped) || !self.started {
            return;
        }
        let why = error
            .map(|e| format!(": {}", e.message))
            .unwrap_or_default();
        let text = format!(
            "✗ step {} ({}) {:?} {}{why}",
            step.index + 1,
            step.phase.as_str(),
            step.title,
            status.as_str()
        );
        self.send("chat.postMessage", text, true);
    }

    fn run_finished(&mut self, status: RunStatus, summary: String) {
        if !self.started {
            return;
        }
        self.send("chat.postMessage", summary.clone(), true);
        if self.thread_ts.is_none() {
            // Through the webhook there is no parent message to update.
            return;
        }
        let mark = if status == RunStatus::Ok {
            "✅"
        } else {
            "❌"
        };
        let headline = format!("{mark} {} · {summary}", self.headline);
        self.send("chat.update", headline, false);
    }
}
