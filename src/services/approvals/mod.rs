//! Approvals: a run asks, a person answers, both recorded, and who answered is established,
//! never taken from what the answer says.
//!
//! A request names the run, its number, a random nonce, the step, what it would change (the
//! step's plan: its would-be mutating calls with their resolved arguments) and that plan's hash.
//! An answer counts only when it carries the run id, number and nonce of its request and the hash
//! of the plan it approves, and when the person behind it is established by the channel it came
//! through:
//!
//! - [`local`]: files next to the transcript (one host). The answerer is the OS account that
//!   owns the answer file, written create-new without following links into a folder where the
//!   sticky bit keeps everyone's files their own.
//! - [`table`]: items in the `aws` state backend's DynamoDB table (any machine). The answerer is
//!   the STS caller of the `runbook approve` that wrote it, each identity answering once.
//!
//! Four-eyes (`others`) and `approvers: N` count distinct established identities
//! ([`Who::key`]): a claimed `RUNBOOK_OPERATOR` never makes one person two. An answer that does
//! not count is refused, and the refusal is recorded in the run's transcript.

pub(crate) mod local;
pub(crate) mod slack;
pub(crate) mod table;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::base::console::Console;
use crate::base::error::{BindingError, Error, Result};
use crate::base::identity::Who;
use crate::base::interrupt::Interrupt;
use crate::services::state::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub run_id: String,
    pub number: u32,
    pub question: String,
    /// Who asked, as a person reads it.
    pub requester: String,
    /// Who asked, as established (the run's identity on this channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_identity: Option<Who>,
    /// Approvals needed (distinct identities).
    pub approvers: u32,
    /// The requester's own answer does not count.
    pub others: bool,
    /// Only these may approve (ARNs, Slack user ids, `os:user@host`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    pub created: String,
    /// Random, fresh per request: an answer must repeat it, so none can be written before the
    /// request exists or carried over from another.
    #[serde(default)]
    pub nonce: String,
    /// What is being approved, for the approver to read before answering: `id@version` of the
    /// runbook, the step, the transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// The run's parameters as its transcript recorded them (secrets as redaction markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The step's would-be mutating calls (`binding`, `args`), as its preview computed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Value>,
    /// The SHA-256 of the plan's canonical text: what an answer approves.
    #[serde(default)]
    pub plan_hash: String,
}

/// A named group of people who may approve (`[approvers]` in runbook.toml).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Group {
    pub name: String,
    /// ARNs, Slack user ids, `os:user@host`, and Slack user groups (`slack-group:S…`), whose
    /// members are asked of Slack when an answer is judged.
    pub members: Vec<String>,
    /// A second group an approver must be in as well (a runbook's `group` under an
    /// environment's `approvers`): each judged by its own rules, so a Slack user group on either
    /// side still means its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<Box<Group>>,
}

/// How a Slack user group is named among an approver group's members: `slack-group:S0123ABCD`.
pub(crate) const SLACK_GROUP: &str = "slack-group:";

/// Asks Slack who is in a user group (`usergroups.users.list`): their user ids, or why Slack
/// could not say.
pub(crate) type Members<'a> = dyn Fn(&str) -> std::result::Result<Vec<String>, String> + 'a;

/// A resolver for processes that cannot ask Slack (`runbook approve`): only Slack identities
/// are ever looked up, and those answer through `serve`, never from a shell.
pub(crate) fn no_slack(id: &str) -> std::result::Result<Vec<String>, String> {
    Err(format!(
        "this process does not ask Slack who is in user group {id}"
    ))
}

impl Group {
    /// A group of `members` named `name`.
    pub(crate) fn new(name: &str, members: Vec<String>) -> Group {
        Group {
            name: name.to_string(),
            members,
            and: None,
        }
    }

    /// Whether `who` may approve for this group: named in it, or a Slack user listed by one of
    /// its Slack user groups as Slack answers now (and likewise in the group it is combined
    /// with). Err: a Slack user group that might have listed them could not be resolved, so
    /// nobody can tell (refused: fail closed).
    pub(crate) fn admits(&self, who: &Who, members: &Members) -> std::result::Result<bool, String> {
        let here = who.in_group(&self.members) || self.in_slack_group(who, members)?;
        match (&self.and, here) {
            (Some(other), true) => other.admits(who, members),
            (_, here) => Ok(here),
        }
    }

    /// The Slack user groups among the members.
    fn slack_groups(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter_map(|m| m.strip_prefix(SLACK_GROUP))
    }

    fn in_slack_group(&self, who: &Who, members: &Members) -> std::result::Result<bool, String> {
        if who.via != crate::base::identity::VIA_SLACK {
            return Ok(false);
        }
        let user = who.id.rsplit('/').next().unwrap_or(&who.id);
        let mut failed = None;
        for id in self.slack_groups() {
            match members(id) {
                Ok(users) if users.iter().any(|u| u == user) => return Ok(true),
                Ok(_) => {}
                Err(e) => {
                    failed = Some(format!("Slack user group {id} could not be resolved ({e})"))
                }
            }
        }
        failed.map_or(Ok(false), Err)
    }

    /// The group's name, with the one it is combined with.
    pub(crate) fn label(&self) -> String {
        match &self.and {
            Some(other) if other.name != self.name => {
                format!("{} and {}", self.name, other.label())
            }
            _ => self.name.clone(),
        }
    }
}

impl Request {
    /// The request as `runbook approve` (and the Slack message) shows it before answering.
    pub(crate) fn describe(&self) -> String {
        let mut out = format!("request {} of run {}\n", self.number, self.run_id);
        for (label, value) in [
            ("runbook", self.runbook.as_deref()),
            ("step", self.step.as_deref()),
            ("transcript", self.transcript.as_deref()),
            ("params", self.params_text().as_deref()),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("  {label:<10} {v}\n"));
            }
        }
        out.push_str(&format!(
            "  {:<10} {} at {}\n  {:<10} {}\n  {:<10} {} approval(s){}{}\n",
            "asked by",
            self.requester,
            self.created,
            "question",
            self.question,
            "needs",
            self.approvers,
            if self.others {
                ", not the requester's own"
            } else {
                ""
            },
            match &self.group {
                Some(g) => format!(", from group {}", g.label()),
                None => String::new(),
            }
        ));
        out.push_str(&self.describe_plan());
        out
    }

    /// The parameters as one line (`{"instance_id":"i-1"}`), when the run has any.
    pub(crate) fn params_text(&self) -> Option<String> {
        self.params
            .as_ref()
            .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
            .map(crate::data::transcript::canonical_text)
    }

    /// The plan, one would-be call a line, and its hash.
    pub(crate) fn describe_plan(&self) -> String {
        let mut out = format!(
            "  {:<10} {} would-be write(s), sha256 {}\n",
            "plan",
            self.plan.len(),
            short(&self.plan_hash)
        );
        for call in &self.plan {
            out.push_str(&format!("    {}\n", call_line(call)));
        }
        out
    }
}

/// `binding(args)` of one planned call, as the plan shows it.
pub(crate) fn call_line(call: &Value) -> String {
    format!(
        "{}({})",
        call["binding"].as_str().unwrap_or("?"),
        crate::data::transcript::canonical_text(&call["args"])
    )
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// The hash an approval binds to: SHA-256 of the plan's canonical text (keys sorted), so equal
/// plans hash equal however their arguments were built.
pub(crate) fn plan_hash(plan: &[Value]) -> String {
    let text = crate::data::transcript::canonical_text(&Value::Array(plan.to_vec()));
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// 128 random bits, hex: a request's nonce.
fn nonce() -> std::result::Result<String, BindingError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| BindingError::new("internal", "no randomness for the request's nonce"))?;
    Ok(hex::encode(bytes))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub run_id: String,
    pub number: u32,
    /// The request's nonce.
    #[serde(default)]
    pub nonce: String,
    pub approve: bool,
    /// The hash of the plan approved.
    #[serde(default)]
    pub plan_hash: String,
    pub at: String,
    /// A display name (`RUNBOOK_OPERATOR`): recorded as claimed, never an identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
}

impl Answer {
    /// `who`'s answer to `request`.
    pub(crate) fn to(request: &Request, approve: bool, claimed: Option<String>) -> Answer {
        Answer {
            run_id: request.run_id.clone(),
            number: request.number,
            nonce: request.nonce.clone(),
            approve,
            plan_hash: request.plan_hash.clone(),
            at: crate::base::clock::now_utc(),
            claimed,
        }
    }
}

/// An answer as a channel read it: with who gave it, as the channel established, or why it
/// cannot be read as anyone's.
pub(crate) enum Read {
    Given {
        key: String,
        who: Box<Who>,
        answer: Box<Answer>,
    },
    Refused {
        key: String,
        why: String,
    },
}

/// Why `who`'s `answer` does not count for `request` (None: it counts). `members` resolves a
/// Slack user group of the request's approver group, now: membership is judged when the answer
/// is, not when the request was filed.
pub(crate) fn refusal(
    request: &Request,
    who: &Who,
    answer: &Answer,
    members: &Members,
) -> Option<String> {
    if answer.run_id != request.run_id
        || answer.number != request.number
        || request.nonce.is_empty()
        || answer.nonce != request.nonce
    {
        return Some(format!(
            "the answer by {} is not bound to request {} of run {} (run id, number or nonce differ)",
            who.display(),
            request.number,
            request.run_id
        ));
    }
    if answer.plan_hash != request.plan_hash {
        return Some(format!(
            "the answer by {} approves another plan (sha256 {}, asked {})",
            who.display(),
            short(&answer.plan_hash),
            short(&request.plan_hash)
        ));
    }
    let own = request
        .requester_identity
        .as_ref()
        .is_some_and(|r| r.key() == who.key());
    // A denial from the requester always counts: stopping is never the risky direction.
    if own && !answer.approve {
        return None;
    }
    if request.others && own {
        return Some(format!(
            "{} asked for this approval and it needs another person (four-eyes): the requester's own answer does not count{}",
            who.display(),
            match &who.claimed {
                Some(c) => format!(", whatever name it claims ({c})"),
                None => String::new(),
            }
        ));
    }
    if let Some(g) = &request.group {
        match g.admits(who, members) {
            Ok(true) => {}
            Ok(false) => {
                let slack = g.slack_groups().collect::<Vec<_>>();
                return Some(format!(
                    "{} is not in the approver group {}{}",
                    who.display(),
                    g.label(),
                    if slack.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (nor a member of Slack user group {}, as Slack lists it now)",
                            slack.join(", ")
                        )
                    }
                ));
            }
            Err(why) => {
                return Some(format!(
                    "cannot tell whether {} is in the approver group {}: {why}; refused (an approver group that cannot be checked admits nobody)",
                    who.display(),
                    g.label()
                ));
            }
        }
    }
    None
}

/// Where requests are filed and answers found: the run's `[state]` backend.
pub(crate) enum Channel {
    Local(local::Folder),
    Table(table::Table),
}

impl Channel {
    /// The channel of a run: the table with the `aws` state backend, else the folder next to
    /// the transcript.
    fn of_run(store: Option<&Store>, transcript: &Path) -> Channel {
        match store {
            Some(Store::Aws(a)) => Channel::Table(table::Table::new(a.clone())),
            _ => Channel::Local(local::Folder::of(transcript)),
        }
    }

    /// Who the run asking is on this channel: the local account, or the state table's STS
    /// caller; a claimed `RUNBOOK_OPERATOR` kept apart either way.
    fn requester(&self) -> std::result::Result<Who, BindingError> {
        let me = Who::this_process();
        match self {
            Channel::Local(_) => Ok(me),
            Channel::Table(t) => Ok(t
                .caller()
                .map_err(|e| BindingError::new("state_unavailable", e.to_string()))?
                .claiming(me.claimed)),
        }
    }

    fn file(&self, request: &mut Request) -> std::result::Result<(), BindingError> {
        match self {
            Channel::Local(f) => f.file(request),
            Channel::Table(t) => t.file(request),
        }
    }

    fn answers(&self, request: &Request) -> Vec<Read> {
        match self {
            Channel::Local(f) => f.answers(request),
            Channel::Table(t) => t.answers(request),
        }
    }
}

/// Asks the operator at the terminal: Some(true) approves, Some(false) denies, None stops.
pub(crate) type Ask = dyn FnMut(&str) -> Option<bool>;

/// What a run asks to have approved.
pub(crate) struct Question<'a> {
    pub text: &'a str,
    pub approvers: u32,
    pub others: bool,
    pub group: Option<Group>,
    /// The would-be mutating calls (`binding`, `args`) the approval covers.
    pub plan: Vec<Value>,
}

/// How a wait for approval ended.
pub(crate) struct Outcome {
    pub approved_by: Vec<Who>,
    pub waited: Duration,
    /// The request, as filed (its plan hash is what was approved).
    pub request: Request,
}

impl Outcome {
    /// The approvers as a person reads them.
    pub(crate) fn names(&self) -> String {
        self.approved_by
            .iter()
            .map(Who::display)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The run asking: what a request is filed next to and describes, where the wait is shown and
/// interrupted, and where refused answers are recorded.
pub(crate) struct Asker<'a> {
    /// The run's transcript (None: the run keeps none, so there is nowhere to file a request).
    pub transcript: Option<PathBuf>,
    /// The step asking (0-based), if a step is.
    pub step: Option<usize>,
    pub console: &'a Console,
    pub interrupt: &'a Interrupt,
    /// The run's state backend (None: local).
    pub store: Option<Store>,
    /// Records a line in the run's transcript (a refused answer).
    pub note: Box<dyn Fn(&str) + 'a>,
    /// Where the request is posted with Approve/Deny buttons (Slack's Web API), if anywhere.
    pub slack: Option<slack::SlackPost<'a>>,
    /// Asks Slack who is in a user group, when an answer is judged.
    pub members: Box<Members<'a>>,
}

/// Files a request and waits for enough approvals, a denial, the timeout, or an interrupt.
/// `ask_here` is the terminal (interactive runs): its answer counts as the operator's.
pub(crate) fn request_and_wait(
    run: Asker,
    question: Question,
    timeout: Duration,
    ask_here: Option<&mut Ask>,
) -> std::result::Result<Outcome, BindingError> {
    let transcript = run.transcript.clone().ok_or_else(|| {
        BindingError::new("no_transcript", "approvals need a run with a transcript")
    })?;
    let channel = Channel::of_run(run.store.as_ref(), &transcript);
    let requester = channel.requester()?;
    let (run_id, runbook, step, params) = describe_run(&transcript, run.step);
    let mut request = Request {
        run_id: run_id.clone(),
        number: 0,
        question: question.text.to_string(),
        requester: requester.display(),
        requester_identity: Some(requester.clone()),
        approvers: question.approvers.max(1),
        others: question.others,
        group: question.group.clone(),
        created: crate::base::clock::now_utc(),
        nonce: nonce()?,
        runbook,
        step,
        transcript: Some(transcript.display().to_string()),
        params,
        plan_hash: plan_hash(&question.plan),
        plan: question.plan,
    };
    channel.file(&mut request)?;
    let _waiting = slack::waiting(&request);
    let posted = run
        .slack
        .as_ref()
        .filter(|_| slack::reachable(run.store.as_ref()))
        .and_then(|s| post(s, &run, &request));
    let filed = request.clone();
    let result = wait(&run, &channel, request, &requester, timeout, ask_here);
    if let (Some(s), Some((channel, ts))) = (&run.slack, &posted) {
        let ended = match &result {
            Ok(o) => format!("Approved by {}", o.names()),
            Err(e) if e.code == "approval_denied" => format!("Denied ({})", e.message),
            Err(e) => format!("Not approved ({})", e.message),
        };
        let update = slack::decided_message(&filed, channel, ts, &ended);
        if let Err(e) =
            s.io.block_on(run.interrupt, s.notifier.slack_api("chat.update", update))
        {
            (run.note)(&format!(
                "could not update the approval message in Slack: {}",
                e.message
            ));
        }
    }
    result
}

/// Posts the request to Slack; the message's (channel, ts), or None (recorded) when it could
/// not be posted: `runbook approve` still can answer.
fn post(s: &slack::SlackPost, run: &Asker, request: &Request) -> Option<(String, String)> {
    let message = slack::request_message(request, &s.channel, s.thread_ts.as_deref());
    match s.io.block_on(
        run.interrupt,
        s.notifier.slack_api("chat.postMessage", message),
    ) {
        Ok(sent) => Some((
            sent["channel"].as_str().unwrap_or(&s.channel).to_string(),
            sent["ts"].as_str().unwrap_or_default().to_string(),
        )),
        Err(e) => {
            (run.note)(&format!(
                "could not post the approval request to Slack ({}): answer with runbook approve",
                e.message
            ));
            None
        }
    }
}

/// Waits for the answers to a filed request.
fn wait(
    run: &Asker,
    channel: &Channel,
    request: Request,
    requester: &Who,
    timeout: Duration,
    ask_here: Option<&mut Ask>,
) -> std::result::Result<Outcome, BindingError> {
    let run_id = &request.run_id;
    run.console.line(&format!(
        "    approval needed: {}\n{}    (waiting up to {}; approve with: runbook approve {run_id})",
        request.question,
        request.describe_plan(),
        humantime::format_duration(timeout)
    ));

    let started = Instant::now();
    let mut approved: Vec<Who> = Vec::new();
    if let Some(ask) = ask_here {
        // The operator at this terminal is the requester: under four-eyes their word cannot
        // count, so they are not asked.
        if !request.others {
            match ask(&format!(
                "approve \"{}\"? type yes to approve, no to deny: ",
                request.question
            )) {
                Some(true) => match refusal_of_terminal(run, &request, requester) {
                    None => approved.push(requester.clone()),
                    Some(why) => (run.note)(&format!("refused answer: {why}")),
                },
                Some(false) => {
                    return Err(BindingError::new(
                        "approval_denied",
                        format!("denied by {}", requester.display()),
                    ));
                }
                None => {
                    return Err(BindingError::new(
                        "aborted",
                        "stopped at the approval prompt",
                    ));
                }
            }
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let mut reads = channel.answers(&request);
        reads.extend(slack::inbox_answers(&request));
        for read in reads {
            match read {
                Read::Refused { key, why } => {
                    if seen.insert(key) {
                        (run.note)(&format!("refused answer: {why}"));
                    }
                }
                Read::Given { key, who, answer } => {
                    if !seen.insert(key) {
                        continue;
                    }
                    if let Some(why) = refusal(&request, &who, &answer, &*run.members) {
                        (run.note)(&format!("refused answer: {why}"));
                        continue;
                    }
                    if !answer.approve {
                        (run.note)(&format!(
                            "denied by {} ({})",
                            who.display(),
                            serde_json::to_string(&who).unwrap_or_default()
                        ));
                        return Err(BindingError::new(
                            "approval_denied",
                            format!("denied by {}", who.display()),
                        ));
                    }
                    if !approved.iter().any(|a| a.key() == who.key()) {
                        approved.push(*who);
                    }
                }
            }
        }
        if approved.len() as u32 >= request.approvers {
            return Ok(Outcome {
                approved_by: approved,
                waited: started.elapsed(),
                request,
            });
        }
        if started.elapsed() >= timeout {
            return Err(BindingError::new(
                "approval_timeout",
                format!(
                    "{} of {} approval(s) within {}",
                    approved.len(),
                    request.approvers,
                    humantime::format_duration(timeout)
                ),
            ));
        }
        run.interrupt
            .sleep(Duration::from_millis(200))
            .map_err(|stop| {
                BindingError::new(stop.token(), "interrupted while waiting for approval")
            })?;
    }
}

/// Why the terminal's own "yes" does not count (a group it is not in).
fn refusal_of_terminal(run: &Asker, request: &Request, me: &Who) -> Option<String> {
    refusal(
        request,
        me,
        &Answer::to(request, true, me.claimed.clone()),
        &*run.members,
    )
}

/// What the transcript says about the run and the step asking, for the request: the run's id
/// (what `runbook approve` is given, from any machine), its runbook, the step and the
/// parameters.
fn describe_run(
    transcript: &Path,
    step: Option<usize>,
) -> (String, Option<String>, Option<String>, Option<Value>) {
    use std::io::BufRead as _;
    let first: Option<Value> = std::fs::File::open(transcript).ok().and_then(|f| {
        let mut line = String::new();
        std::io::BufReader::new(f).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    });
    let stem = transcript
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(first) = first else {
        return (stem, None, None, None);
    };
    let run_id = first["run_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map_or(stem, str::to_string);
    let runbook = first["runbook"]["id"].as_str().map(|id| {
        format!(
            "{id}@{} ({})",
            first["runbook"]["version"].as_str().unwrap_or("?"),
            first["runbook"]["title"].as_str().unwrap_or("?")
        )
    });
    let steps = first["steps"].as_array();
    let step = step.map(|i| {
        let s = steps.and_then(|s| s.get(i));
        format!(
            "{}/{} {:?} ({})",
            i + 1,
            steps.map_or(0, Vec::len),
            s.and_then(|s| s["title"].as_str()).unwrap_or("?"),
            s.and_then(|s| s["phase"].as_str()).unwrap_or("?")
        )
    });
    let params = Some(first["params"].clone()).filter(|p| !p.is_null());
    (run_id, runbook, step, params)
}

/// Finds a run's transcript under the transcripts folder (`RUNBOOK_TRANSCRIPTS` or the
/// project's transcripts/).
pub(crate) fn find_transcript(run_id: &str) -> Result<PathBuf> {
    let root = crate::data::config::transcripts_dir();
    let name = format!("{run_id}.jsonl");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if e.file_name().to_string_lossy() == name {
                return Ok(path);
            }
        }
    }
    Err(Error::NotFound(format!(
        "run {run_id} (no {name} under {})",
        root.display()
    )))
}

/// Where `runbook approve` looks for a run's requests.
pub(crate) enum Answering {
    /// The folder next to this transcript.
    Local(PathBuf),
    /// The state table.
    Table(std::sync::Arc<crate::services::state::aws::AwsStore>),
}

/// `runbook approve`: answers the newest pending request of run `run_id` (or request `number`)
/// as the identity the channel establishes, after checking the answer would count. Returns the
/// request answered, for the caller to show.
pub(crate) fn answer(
    run_id: &str,
    at: Answering,
    number: Option<u32>,
    approve: bool,
) -> Result<(Request, Who)> {
    let me = Who::this_process();
    match at {
        Answering::Local(transcript) => {
            let folder = local::Folder::of(&transcript);
            let request = folder.request(number)?;
            folder.give(&checked_answer(&request, &me, approve)?)?;
            Ok((request, me))
        }
        Answering::Table(store) => {
            let table = table::Table::new(store);
            let request = table.request(run_id, number)?;
            let who = table.caller()?.claiming(me.claimed);
            table.give(&checked_answer(&request, &who, approve)?, &who)?;
            Ok((request, who))
        }
    }
}

/// `who`'s answer to `request`, refused up front (exit 2) when it would not count.
fn checked_answer(request: &Request, who: &Who, approve: bool) -> Result<Answer> {
    let answer = Answer::to(request, approve, who.claimed.clone());
    match refusal(request, who, &answer, &no_slack) {
        None => Ok(answer),
        Some(why) if why.contains("four-eyes") => Err(Error::Usage(format!(
            "{why}: the requester cannot approve their own run"
        ))),
        Some(why) => Err(Error::Usage(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(others: bool) -> Request {
        Request {
            run_id: "r".into(),
            number: 1,
            question: "q".into(),
            requester: "me".into(),
            requester_identity: Some(Who::aws("arn:aws:iam::1:user/alice")),
            approvers: 1,
            others,
            group: None,
            created: "t".into(),
            nonce: "n1".into(),
            runbook: None,
            step: None,
            transcript: None,
            params: None,
            plan: vec![serde_json::json!({"binding": "ec2::stop", "args": {"ids": ["i-1"]}})],
            plan_hash: "h".into(),
        }
    }

    #[test]
    fn an_answer_counts_only_bound_to_its_request_and_plan() {
        let r = request(false);
        let bob = Who::aws("arn:aws:iam::1:user/bob");
        let good = Answer::to(&r, true, None);
        assert!(refusal(&r, &bob, &good, &no_slack).is_none());
        let mut other_nonce = good.clone();
        other_nonce.nonce = "n2".into();
        assert!(refusal(&r, &bob, &other_nonce, &no_slack).is_some());
        let mut other_plan = good.clone();
        other_plan.plan_hash = "other".into();
        assert!(
            refusal(&r, &bob, &other_plan, &no_slack)
                .unwrap()
                .contains("another plan")
        );
    }

    #[test]
    fn a_claimed_name_does_not_satisfy_four_eyes_but_the_requester_may_deny() {
        let r = request(true);
        let alice = Who::aws("arn:aws:iam::1:user/alice").claiming(Some("someone-else".into()));
        let yes = Answer::to(&r, true, alice.claimed.clone());
        assert!(
            refusal(&r, &alice, &yes, &no_slack)
                .unwrap()
                .contains("four-eyes")
        );
        let no = Answer::to(&r, false, None);
        assert!(refusal(&r, &alice, &no, &no_slack).is_none());
    }

    #[test]
    fn a_group_admits_only_its_members() {
        let mut r = request(false);
        r.group = Some(Group::new(
            "leads",
            vec!["arn:aws:iam::1:user/carol".into()],
        ));
        let bob = Who::aws("arn:aws:iam::1:user/bob");
        let carol = Who::aws("arn:aws:iam::1:user/carol");
        assert!(
            refusal(&r, &bob, &Answer::to(&r, true, None), &no_slack)
                .unwrap()
                .contains("not in the approver group leads")
        );
        assert!(refusal(&r, &carol, &Answer::to(&r, true, None), &no_slack).is_none());
    }

    #[test]
    fn a_slack_user_group_admits_its_members_as_slack_answers_now_and_refuses_when_it_cannot() {
        let mut r = request(false);
        r.group = Some(Group::new(
            "leads",
            vec!["slack-group:S0LEADS".into(), "slack-group:S0GONE".into()],
        ));
        let slack = |id: &str| match id {
            "S0LEADS" => Ok(vec!["U0CAROL".to_string()]),
            _ => Err("no_such_subteam".to_string()),
        };
        let yes = Answer::to(&r, true, None);
        let carol = Who::slack("T1", "U0CAROL", None);
        assert!(refusal(&r, &carol, &yes, &slack).is_none());
        // Not listed, and the other group cannot be asked: nobody can tell, so refused.
        let bob = Who::slack("T1", "U0BOB", None);
        let why = refusal(&r, &bob, &yes, &slack).unwrap();
        assert!(
            why.contains("S0GONE could not be resolved (no_such_subteam)"),
            "{why}"
        );
        // An identity that is not a Slack user is never looked up.
        let arn = Who::aws("arn:aws:iam::1:user/dave");
        let why = refusal(&r, &arn, &yes, &no_slack).unwrap();
        assert!(why.contains("is not in the approver group leads (nor a member of Slack user group S0LEADS, S0GONE"), "{why}");
        // Combined with another group, both must admit.
        r.group = Some(Group {
            and: Some(Box::new(Group::new("prod", vec!["U0DAVE".into()]))),
            ..Group::new("leads", vec!["slack-group:S0LEADS".into()])
        });
        let why = refusal(&r, &carol, &yes, &slack).unwrap();
        assert!(
            why.contains("not in the approver group leads and prod"),
            "{why}"
        );
    }

    #[test]
    fn equal_plans_hash_equal_whatever_their_key_order() {
        let a = vec![serde_json::json!({"binding": "x", "args": {"a": 1, "b": 2}})];
        let b = vec![serde_json::json!({"args": {"b": 2, "a": 1}, "binding": "x"})];
        assert_eq!(plan_hash(&a), plan_hash(&b));
        assert_ne!(plan_hash(&a), plan_hash(&[]));
    }
}
