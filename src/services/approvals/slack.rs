//! Approvals from Slack: the request posted as a Block Kit message with Approve and Deny buttons
//! and the plan, and the answers `runbook serve` verified (`POST /hooks/slack/interactions`)
//! handed to the waiting run.
//!
//! A button's value names the request (run id, number, nonce) and the plan hash it approves; the
//! person is the Slack user of the signed interaction, never anything in the value. Answers go
//! where the run reads them: the state table with the `aws` backend (a run on any host), else
//! this process's inbox (a run `serve` itself is running).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use serde_json::{Value, json};

use super::{Answer, Read, Request, call_line};
use crate::base::identity::Who;
use crate::services::state::Store;

/// Where and how the run posts its request: the notifier (its redaction and retries) and the
/// channel (`SLACK_CHANNEL` / `[notifications] slack_channel`).
pub(crate) struct SlackPost<'a> {
    pub notifier: &'a crate::services::notify::Notifier,
    pub io: &'a crate::services::runtime::AsyncIo,
    pub channel: String,
    /// The run's incident thread in that channel, when it has one: the request is a reply there.
    pub thread_ts: Option<String>,
}

/// The message a request is posted as (a reply in `thread_ts`, when given).
pub(crate) fn request_message(request: &Request, channel: &str, thread_ts: Option<&str>) -> Value {
    let value = button_value(request);
    let mut about = format!(
        "*Approval needed*: {}\nrequest {} of run `{}`",
        request.question, request.number, request.run_id
    );
    for (label, v) in [
        ("runbook", request.runbook.as_deref()),
        ("step", request.step.as_deref()),
    ] {
        if let Some(v) = v {
            about.push_str(&format!("\n{label}: {v}"));
        }
    }
    if let Some(params) = request.params_text() {
        about.push_str(&format!("\nparams: `{params}`"));
    }
    about.push_str(&format!(
        "\nasked by {}; needs {} approval(s){}{}",
        request.requester,
        request.approvers,
        if request.others {
            ", not the requester's own"
        } else {
            ""
        },
        match &request.group {
            Some(g) => format!(", from group {}", g.label()),
            None => String::new(),
        }
    ));
    let mut plan = format!(
        "*Plan*: {} would-be write(s), sha256 `{}`",
        request.plan.len(),
        request.plan_hash
    );
    if !request.plan.is_empty() {
        let calls: Vec<String> = request.plan.iter().map(call_line).collect();
        plan.push_str(&format!("\n```{}```", calls.join("\n")));
    }
    let button = |id: &str, text: &str, style: &str| {
        json!({
            "type": "button", "action_id": id, "style": style, "value": value,
            "text": { "type": "plain_text", "text": text },
        })
    };
    let mut message = json!({
        "channel": channel,
        "text": format!("Approval needed: {}", request.question),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": about } },
            { "type": "section", "text": { "type": "mrkdwn", "text": plan } },
            { "type": "actions", "block_id": "approval", "elements": [
                button("approve", "Approve", "primary"),
                button("deny", "Deny", "danger"),
            ] },
        ],
    });
    if let Some(ts) = thread_ts {
        message["thread_ts"] = json!(ts);
    }
    message
}

/// The message once decided: what was asked and how it ended, with no buttons left.
pub(crate) fn decided_message(request: &Request, channel: &str, ts: &str, ended: &str) -> Value {
    let text = format!(
        "{ended}: {} (request {} of run `{}`, plan sha256 `{}`)",
        request.question, request.number, request.run_id, request.plan_hash
    );
    json!({
        "channel": channel,
        "ts": ts,
        "text": text,
        "blocks": [ { "type": "section", "text": { "type": "mrkdwn", "text": text } } ],
    })
}

/// `run_id|number|nonce|plan_hash`: which request a button answers, and which plan.
fn button_value(request: &Request) -> String {
    format!(
        "{}|{}|{}|{}",
        request.run_id, request.number, request.nonce, request.plan_hash
    )
}

/// The answer a button click is, by the person who clicked (None: not a button of ours).
pub(crate) fn answer_of(action_id: &str, value: &str, claimed: Option<String>) -> Option<Answer> {
    let approve = match action_id {
        "approve" => true,
        "deny" => false,
        _ => return None,
    };
    let mut parts = value.split('|');
    let (run_id, number, nonce, plan_hash) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Answer {
        run_id: run_id.to_string(),
        number: number.parse().ok()?,
        nonce: nonce.to_string(),
        approve,
        plan_hash: plan_hash.to_string(),
        at: crate::base::clock::now_utc(),
        claimed,
    })
}

/// Answers from Slack for runs in this process, by (run, request number), one per identity.
type Inbox = HashMap<(String, u32), Vec<(Who, Answer)>>;
static INBOX: LazyLock<Mutex<Inbox>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// The requests runs in this process are waiting on: a click for any other is not taken.
static WAITING: LazyLock<Mutex<std::collections::HashSet<(String, u32)>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashSet::new()));
/// Requests runs in this process wait on now (each entry is removed when its run stops
/// waiting, with its inbox): `/metrics` shows it stays bounded by the runs running.
pub(crate) fn waiting_count() -> usize {
    WAITING.lock().map(|w| w.len()).unwrap_or(0)
}

/// Set by `serve` when it takes Slack clicks: only then can a run on the `local` backend be
/// answered from Slack (its clicks arrive in this process).
static SERVED: AtomicBool = AtomicBool::new(false);

/// This process receives Slack clicks (`serve` with a signing secret).
pub(crate) fn receive_in_process() {
    SERVED.store(true, Ordering::SeqCst);
}

/// Whether a click on a request of a run on `store` can reach it: through the table, or into
/// this process when it receives clicks. Buttons nobody can answer are never posted.
pub(crate) fn reachable(store: Option<&Store>) -> bool {
    matches!(store, Some(Store::Aws(_))) || SERVED.load(Ordering::SeqCst)
}

/// A run in this process waits on `request` until the returned guard is dropped.
pub(crate) fn waiting(request: &Request) -> Waiting {
    let key = (request.run_id.clone(), request.number);
    if let Ok(mut w) = WAITING.lock() {
        w.insert(key.clone());
    }
    Waiting(key)
}

pub(crate) struct Waiting((String, u32));

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut w) = WAITING.lock() {
            w.remove(&self.0);
        }
        if let Ok(mut inbox) = INBOX.lock() {
            inbox.remove(&self.0);
        }
    }
}

/// Records `who`'s verified answer where the run reads it: the table (aws), else this
/// process's inbox. Err says why it was not recorded (an identity answers once).
pub(crate) fn deliver(store: &Store, answer: &Answer, who: &Who) -> Result<(), String> {
    match store {
        Store::Aws(a) => super::table::Table::new(a.clone())
            .give(answer, who)
            .map_err(|e| e.to_string()),
        Store::Local(_) => {
            let key = (answer.run_id.clone(), answer.number);
            if !WAITING.lock().is_ok_and(|w| w.contains(&key)) {
                return Err(format!(
                    "no run in this server is waiting on request {} of run {}: answer it with runbook approve where it runs",
                    answer.number, answer.run_id
                ));
            }
            let mut inbox = INBOX
                .lock()
                .map_err(|_| "the approvals inbox is unusable".to_string())?;
            let given = inbox
                .entry((answer.run_id.clone(), answer.number))
                .or_default();
            if given.iter().any(|(w, _)| w.key() == who.key()) {
                return Err(format!(
                    "request {} already has an answer from {}; an answer is given once",
                    answer.number,
                    who.display()
                ));
            }
            given.push((who.clone(), answer.clone()));
            Ok(())
        }
    }
}

/// The Slack answers this process holds for `request`.
pub(crate) fn inbox_answers(request: &Request) -> Vec<Read> {
    let Ok(inbox) = INBOX.lock() else {
        return Vec::new();
    };
    inbox
        .get(&(request.run_id.clone(), request.number))
        .map(|given| {
            given
                .iter()
                .map(|(who, answer)| Read::Given {
                    key: format!("slack-inbox:{}", who.key()),
                    who: Box::new(who.clone()),
                    answer: Box::new(answer.clone()),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_button_value_is_read_back_as_the_answer_it_stands_for() {
        let a = answer_of("approve", "01run|3|abc|def", None).unwrap();
        assert_eq!(
            (a.run_id.as_str(), a.number, a.nonce.as_str(), a.approve),
            ("01run", 3, "abc", true)
        );
        assert_eq!(a.plan_hash, "def");
        assert!(!answer_of("deny", "01run|3|abc|def", None).unwrap().approve);
        assert!(answer_of("other", "01run|3|abc|def", None).is_none());
        assert!(answer_of("approve", "01run|x|abc|def", None).is_none());
        assert!(answer_of("approve", "01run|3|abc|def|more", None).is_none());
    }
}
