//! `slack::` and `teams::`: where on-call lives. Posts are mutating (plan mode lists them), go
//! through the recorder, and on the sim backend are captured in memory instead of sent.
//!
//! A post that fails (rate limited past its retries, endpoint down, not configured) is recorded
//! and answered with `#{ ok: false, error }`: a chat outage must not stop a containment. A runbook
//! that needs the message to arrive passes `required: true` and gets an error instead. Either
//! way the operator is told on the terminal, the run's summary counts it, and the `RunReport`
//! carries the count (`serve` escalates it): an incident alert that never went out is news.
//!
//! With only an incoming webhook configured (no bot token), a message for a channel goes to the
//! webhook's own channel instead (a webhook cannot choose one), and the terminal says so.

use std::rc::Rc;

use rhai::Map;
use rhai::plugin::*;
use serde_json::{Value, json};

use super::args;
use crate::base::error::BindingError;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult};
use crate::services::notify::{self, slack_blocks, teams_card};

/// What a post returns in a plan: the shape of a delivered one (`#{ ok, ts, channel }`).
fn sent_placeholder(args: &Value) -> Dynamic {
    let mut m = Map::new();
    m.insert("ok".into(), true.into());
    m.insert("ts".into(), "planned".into());
    m.insert(
        "channel".into(),
        args["channel"]
            .as_str()
            .map_or(Dynamic::UNIT, |c| c.to_string().into()),
    );
    m.insert("planned".into(), true.into());
    m.into()
}

static SLACK_POST: Binding = Binding {
    name: "slack::post",
    effect: Effect::Mutating,
    placeholder: sent_placeholder,
};
static SLACK_UPDATE: Binding = Binding {
    name: "slack::update",
    effect: Effect::Mutating,
    placeholder: sent_placeholder,
};
static TEAMS_POST: Binding = Binding {
    name: "teams::post",
    effect: Effect::Mutating,
    placeholder: sent_placeholder,
};
static LIFECYCLE: Binding = Binding {
    name: "slack::lifecycle",
    effect: Effect::Mutating,
    placeholder: sent_placeholder,
};

/// Where a Slack message goes.
enum Route {
    /// `chat.postMessage` to a channel (optionally in a thread).
    Api {
        channel: String,
        thread_ts: Option<String>,
    },
    /// The incoming webhook (no channel choice, no threads); `instead_of` is the channel the
    /// runbook asked for when the webhook stands in for a missing bot token.
    Webhook { instead_of: Option<String> },
}

/// Whether messages for a channel must go to the webhook: there is no bot token to reach the
/// Web API, but there is a webhook (a message in the wrong channel beats no message).
fn webhook_only(host: &Host) -> bool {
    let s = host.notifier.settings();
    s.slack_bot_token.is_none() && s.slack_webhook_url.is_some()
}

/// The route for a message: an explicit channel needs the Web API; without one, the webhook if
/// configured, else the default channel through the Web API. Without a bot token, the webhook.
fn route(host: &Host, channel: Option<String>, thread_ts: Option<String>) -> Route {
    let s = host.notifier.settings();
    match channel.or_else(|| {
        (s.slack_webhook_url.is_none())
            .then(|| s.slack_channel.clone())
            .flatten()
    }) {
        Some(channel) if webhook_only(host) => Route::Webhook {
            instead_of: Some(channel),
        },
        Some(channel) => Route::Api { channel, thread_ts },
        None => Route::Webhook { instead_of: None },
    }
}

/// Sends and shapes the answer: `#{ ok, ts, channel }`, or `#{ ok: false, code, error }` (an
/// error instead when `required`). A message that did not go out is said on the terminal and
/// counted for the run's summary, whether or not the runbook looks at the answer.
fn deliver(
    host: &Host,
    what: &str,
    required: bool,
    send: impl std::future::Future<Output = Result<Value, BindingError>>,
) -> Result<Dynamic, BindingError> {
    match host.io.block_on(&host.interrupt, send) {
        Ok(v) => args::to_dynamic(&v),
        // Stopped by Ctrl-C or the step's deadline: the run says so itself.
        Err(e) if host.interrupt.check().is_some() => Err(e),
        Err(e) => {
            host.notifier.note_undelivered();
            host.console.line(&host.redactor.redact(&format!(
                "    warning: {what} NOT delivered: {}: {}",
                e.code, e.message
            )));
            if required {
                return Err(e);
            }
            args::to_dynamic(&json!({ "ok": false, "code": e.code, "error": e.message }))
        }
    }
}

fn slack_send(ctx: &NativeCallContext, text: String, o: PostOptions) -> ScriptResult<Map> {
    let PostOptions {
        channel,
        thread_ts,
        blocks,
        required,
        incident,
    } = o;
    let host = recorder::host_of(ctx)?;
    let r = route(&host, channel, thread_ts);
    let recorded = match &r {
        // `incident` only when set, so other posts record what they always did.
        Route::Api { channel, thread_ts } if incident => {
            json!({ "channel": channel, "thread_ts": thread_ts, "text": text, "incident": true })
        }
        Route::Api { channel, thread_ts } => {
            json!({ "channel": channel, "thread_ts": thread_ts, "text": text })
        }
        Route::Webhook {
            instead_of: Some(channel),
        } => json!({ "webhook": true, "instead_of": channel, "text": text }),
        Route::Webhook { instead_of: None } => json!({ "webhook": true, "text": text }),
    };
    let answer = recorder::call(ctx, &SLACK_POST, recorded.clone(), |host| {
        let mut payload = json!({ "text": text });
        if let Some(b) = &blocks {
            payload["blocks"] = b.clone();
        }
        match r {
            Route::Api { channel, thread_ts } => {
                payload["channel"] = json!(channel);
                if let Some(ts) = &thread_ts {
                    payload["thread_ts"] = json!(ts);
                }
                let what = format!("Slack message to {channel}");
                deliver(
                    host,
                    &what,
                    required,
                    host.notifier.slack_api("chat.postMessage", payload),
                )
            }
            Route::Webhook { instead_of } => {
                let what = match &instead_of {
                    Some(channel) => {
                        if host.recorder.mode() != crate::sandbox::recorder::Mode::Plan {
                            host.console.line(&format!(
                                "    note: no SLACK_BOT_TOKEN: the message for {channel} goes to the Slack webhook's own channel"
                            ));
                        }
                        format!("Slack message for {channel} (through the webhook)")
                    }
                    None => "Slack message (webhook)".to_string(),
                };
                deliver(host, &what, required, host.notifier.slack_webhook(payload))
            }
        }
    })?
    .try_cast::<Map>()
    .unwrap_or_default();
    note_thread(&host, SLACK_POST.name, &recorded, &answer);
    Ok(answer)
}

/// The incident thread a post names, read from what the transcript keeps of it (its binding,
/// recorded arguments and answer): a delivered reply names the thread it replied in; a
/// delivered incident alert or run parent message starts one (its own `ts`). Resume reads the
/// thread back from the transcript with this, so it is the one rule for live and resumed runs.
pub(crate) fn thread_noted(
    binding: &str,
    args: &Value,
    answer: &Value,
) -> Option<(String, String)> {
    if answer["ok"] != true {
        return None;
    }
    let channel = answer["channel"].as_str().or(args["channel"].as_str())?;
    let starts = match binding {
        "slack::post" => args["incident"] == true,
        // The webhook has no threads (and its answer no ts).
        "slack::lifecycle" => args["method"] == "chat.postMessage",
        _ => return None,
    };
    let ts = match args["thread_ts"].as_str() {
        Some(ts) if binding == "slack::post" || starts => ts,
        None if starts => answer["ts"].as_str()?,
        _ => return None,
    };
    Some((channel.to_string(), ts.to_string()))
}

/// Notes the run's incident thread from a post's answer, after the call rather than in the
/// sending code: a resumed run gets the answers of the interrupted step's posts from the
/// transcript without sending them, and must still post its approval requests in the thread.
fn note_thread(host: &Host, binding: &str, recorded: &Value, answer: &Map) {
    let answer = recorder::to_json(&Dynamic::from_map(answer.clone()));
    if let Some((channel, ts)) = thread_noted(binding, recorded, &answer) {
        host.note_incident_thread(&channel, &ts);
    }
}

/// A template message: its text, as Block Kit, with the caller's post options; `incident`: it
/// starts the run's incident thread.
fn post_template(
    ctx: &NativeCallContext,
    text: String,
    options: &Map,
    incident: bool,
) -> ScriptResult<Map> {
    let o = post_options(options).map_err(|e| arg_error(ctx, e))?;
    let blocks = Some(slack_blocks(&text));
    slack_send(
        ctx,
        text,
        PostOptions {
            blocks,
            incident,
            ..o
        },
    )
}

fn template_fields(fields: &Map) -> Value {
    recorder::to_json(&Dynamic::from_map(fields.clone()))
}

#[derive(Default)]
struct PostOptions {
    channel: Option<String>,
    thread_ts: Option<String>,
    blocks: Option<Value>,
    required: bool,
    /// The incident alert: its message starts the run's incident thread.
    incident: bool,
}

impl PostOptions {
    fn to(channel: &str) -> Self {
        PostOptions {
            channel: Some(channel.to_string()),
            ..PostOptions::default()
        }
    }
}

fn post_options(opts: &Map) -> Result<PostOptions, BindingError> {
    args::known(opts, &["channel", "thread_ts", "blocks", "required"])?;
    Ok(PostOptions {
        channel: args::string(opts, "channel")?,
        thread_ts: args::string(opts, "thread_ts")?,
        blocks: opts.get("blocks").map(recorder::to_json),
        required: args::boolean(opts, "required", false)?,
        incident: false,
    })
}

fn arg_error(ctx: &NativeCallContext, e: BindingError) -> Box<EvalAltResult> {
    recorder::runtime_error(&e.code, &e.message, ctx.call_position())
}

/// Slack: incoming webhook or Web API (bot token), Block Kit, threads, the incident templates.
#[export_module]
pub mod slack_api {
    /// Posts `text` to the incoming webhook (or, without one, to the default channel through the
    /// Web API). Returns `#{ ok, ts, channel }` or `#{ ok: false, code, error }`. Mutating.
    #[rhai_fn(name = "post", return_raw)]
    pub(crate) fn post(ctx: NativeCallContext, text: &str) -> ScriptResult<Map> {
        slack_send(&ctx, text.to_string(), PostOptions::default())
    }

    /// `post(text)` with options: `required` (error instead of `ok: false`), `blocks`. Mutating.
    #[rhai_fn(name = "post", return_raw)]
    pub(crate) fn post_default_with(
        ctx: NativeCallContext,
        text: &str,
        options: Map,
    ) -> ScriptResult<Map> {
        let o = post_options(&options).map_err(|e| arg_error(&ctx, e))?;
        slack_send(&ctx, text.to_string(), o)
    }

    /// Posts `text` to `channel` with `chat.postMessage` (needs `SLACK_BOT_TOKEN`; with only
    /// `SLACK_WEBHOOK_URL` it goes to the webhook's own channel, and the terminal says so). A
    /// message that cannot be delivered is warned about on the terminal and counted in the run's
    /// summary. Mutating.
    #[rhai_fn(name = "post", return_raw)]
    pub(crate) fn post_to(ctx: NativeCallContext, channel: &str, text: &str) -> ScriptResult<Map> {
        slack_send(&ctx, text.to_string(), PostOptions::to(channel))
    }

    /// `post` with options: `blocks` (Block Kit array), `thread_ts` (reply in a thread),
    /// `required` (error instead of `ok: false`). Mutating.
    #[rhai_fn(name = "post", return_raw)]
    pub(crate) fn post_with(
        ctx: NativeCallContext,
        channel: &str,
        text: &str,
        options: Map,
    ) -> ScriptResult<Map> {
        let o = post_options(&options).map_err(|e| arg_error(&ctx, e))?;
        slack_send(
            &ctx,
            text.to_string(),
            PostOptions {
                channel: Some(channel.to_string()),
                ..o
            },
        )
    }

    /// Replies in the thread of message `thread_ts` in `channel`. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn reply(
        ctx: NativeCallContext,
        channel: &str,
        thread_ts: &str,
        text: &str,
    ) -> ScriptResult<Map> {
        slack_send(
            &ctx,
            text.to_string(),
            PostOptions {
                thread_ts: Some(thread_ts.to_string()),
                ..PostOptions::to(channel)
            },
        )
    }

    /// Replaces the text of message `ts` in `channel` (`chat.update`). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn update(
        ctx: NativeCallContext,
        channel: &str,
        ts: &str,
        text: &str,
    ) -> ScriptResult<Map> {
        let (channel, ts, text) = (channel.to_string(), ts.to_string(), text.to_string());
        recorder::call(
            &ctx,
            &SLACK_UPDATE,
            json!({ "channel": channel, "ts": ts, "text": text }),
            |host| {
                let payload = json!({ "channel": channel, "ts": ts, "text": text });
                let what = format!("Slack update in {channel}");
                deliver(
                    host,
                    &what,
                    false,
                    host.notifier.slack_api("chat.update", payload),
                )
            },
        )
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Posts the initial incident report (DevOps document template) as Block Kit. `fields`:
    /// `severity`, `environment`, `service`, `description`, `started`, `status`, `commander`.
    /// Mutating.
    #[rhai_fn(name = "incident_alert", return_raw)]
    pub(crate) fn incident_alert(ctx: NativeCallContext, fields: Map) -> ScriptResult<Map> {
        incident_alert_with(ctx, fields, Map::new())
    }

    /// `incident_alert` with `post` options (`channel`, `thread_ts`, `required`). A `channel`
    /// needs `SLACK_BOT_TOKEN`; with only `SLACK_WEBHOOK_URL` the alert goes to the webhook's
    /// channel instead (said on the terminal, recorded as `instead_of`).
    #[rhai_fn(name = "incident_alert", return_raw)]
    pub(crate) fn incident_alert_with(
        ctx: NativeCallContext,
        fields: Map,
        options: Map,
    ) -> ScriptResult<Map> {
        post_template(
            &ctx,
            notify::incident_alert_text(&template_fields(&fields)),
            &options,
            true,
        )
    }

    /// Posts the resolution notice (DevOps document template). `fields`: `incident`,
    /// `duration`, `root_cause`, `resolution`, `postmortem`. Mutating.
    #[rhai_fn(name = "resolution", return_raw)]
    pub(crate) fn resolution(ctx: NativeCallContext, fields: Map) -> ScriptResult<Map> {
        resolution_with(ctx, fields, Map::new())
    }

    /// `resolution` with `post` options.
    #[rhai_fn(name = "resolution", return_raw)]
    pub(crate) fn resolution_with(
        ctx: NativeCallContext,
        fields: Map,
        options: Map,
    ) -> ScriptResult<Map> {
        post_template(
            &ctx,
            notify::resolution_text(&template_fields(&fields)),
            &options,
            false,
        )
    }
}

fn teams_send(
    ctx: &NativeCallContext,
    payload: Value,
    shown: String,
    required: bool,
) -> ScriptResult<Map> {
    recorder::call(ctx, &TEAMS_POST, json!({ "text": shown }), |host| {
        deliver(
            host,
            "Teams message",
            required,
            host.notifier.teams(payload),
        )
    })
    .map(|d| d.try_cast::<Map>().unwrap_or_default())
}

/// Microsoft Teams incoming webhooks, with Adaptive Cards.
#[export_module]
pub mod teams_api {
    /// Posts `text` to the Teams webhook (`TEAMS_WEBHOOK_URL`) as an Adaptive Card. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn post(ctx: NativeCallContext, text: &str) -> ScriptResult<Map> {
        teams_send(&ctx, teams_card(text), text.to_string(), false)
    }

    /// Posts the initial incident report as an Adaptive Card (fields as for
    /// `slack::incident_alert`). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn incident_alert(ctx: NativeCallContext, fields: Map) -> ScriptResult<Map> {
        let text = notify::incident_alert_text(&template_fields(&fields));
        teams_send(&ctx, teams_card(&text), text, false)
    }

    /// Posts the resolution notice as an Adaptive Card. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn resolution(ctx: NativeCallContext, fields: Map) -> ScriptResult<Map> {
        let text = notify::resolution_text(&template_fields(&fields));
        teams_send(&ctx, teams_card(&text), text, false)
    }
}

/// Sends one run lifecycle message (`method` is `chat.postMessage` or `chat.update`) through the
/// recorder, like any binding: recorded, planned in plan mode, redacted, never fatal. `thread_ts`
/// makes it a reply, `update_ts` names the message an update replaces. Some(ts) when delivered
/// ("" when the answer has no ts: a webhook's). The run observer that decides what to send is
/// `crate::run::lifecycle`'s.
pub(crate) fn lifecycle_post(
    host: &Rc<Host>,
    method: &'static str,
    channel: &str,
    thread_ts: Option<String>,
    update_ts: Option<String>,
    text: String,
) -> Option<String> {
    let recorded =
        json!({ "method": method, "channel": channel, "thread_ts": thread_ts, "text": text });
    let result = recorder::call_at(host, Position::NONE, &LIFECYCLE, recorded.clone(), |host| {
        let mut payload = json!({ "channel": channel, "text": text });
        if let Some(ts) = &thread_ts {
            payload["thread_ts"] = json!(ts);
        }
        if let Some(ts) = &update_ts {
            payload["ts"] = json!(ts);
        }
        let what = format!("Slack lifecycle message to {channel}");
        if webhook_only(host) {
            // No bot token: top-level messages in the webhook's channel, no thread.
            payload["text"] = json!(format!("{text} (for {channel})"));
            return deliver(host, &what, false, host.notifier.slack_webhook(payload));
        }
        deliver(host, &what, false, host.notifier.slack_api(method, payload))
    });
    let answer = result.ok().and_then(|d| d.try_cast::<Map>())?;
    // The run's parent message (or its thread) is the run's incident thread; the webhook has
    // no threads.
    if !webhook_only(host) {
        note_thread(host, LIFECYCLE.name, &recorded, &answer);
    }
    (answer.get("ok").and_then(|v| v.as_bool().ok()) == Some(true))
        .then(|| answer.get("ts").map(|t| t.to_string()).unwrap_or_default())
}
