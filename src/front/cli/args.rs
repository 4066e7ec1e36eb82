//! The command line's definitions (clap derive): what each command accepts, and nothing else.
//! `run`, `plan` and `resume` share one flattened group of flags ([`LaunchArgs`]); `run` and
//! `resume` share how a person drives the run ([`DriveArgs`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;

use super::complete;

#[derive(Debug, Parser)]
#[command(
    name = "runbook",
    version,
    about = "Run incident runbooks step by step, with a verifiable audit transcript",
    after_help = "Exit codes: 0 ok, 1 run failed (or check/verify found a problem), 2 invalid input, 3 aborted or timed out."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Folders that hold runbooks (default: ./runbooks)
    #[arg(long, global = true, env = "RUNBOOK_PATH", value_delimiter = ':')]
    pub(crate) runbooks: Vec<PathBuf>,

    /// Print only results and errors, no progress
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,

    /// The environments file (default: the first runbook.toml walking up from here)
    #[arg(long, global = true, env = "RUNBOOK_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// The AWS profile, over AWS_PROFILE and runbook.toml (the AWS CLI's precedence; commands that
    /// talk to AWS only)
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) profile: Option<String>,

    /// The AWS region, over AWS_REGION and runbook.toml (the AWS CLI's precedence; commands that
    /// talk to AWS only)
    #[arg(long, global = true, value_name = "REGION")]
    pub(crate) region: Option<String>,

    /// Diagnostic log format on stderr (json: one object per line, for log aggregation)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RUNBOOK_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every step of a runbook, unattended
    Run(RunArgs),
    /// Run a runbook without sending any mutating call: each is recorded as "would call"
    Plan(PlanArgs),
    /// Validate runbooks (files or folders; default: the runbook folders)
    Check {
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Also check the runbook mandate: a runbook with all three phases for every P1/P2 alert,
        /// reviewed and drilled within 90 days, versions bumped when content changes
        #[arg(long)]
        policy: bool,
        /// The alert catalogue [default: alerts.toml in the project's folder]
        #[arg(long, value_name = "FILE")]
        alerts: Option<PathBuf>,
        /// Where drill records are [default: drills/results in the project's folder]
        #[arg(long, value_name = "DIR")]
        results: Option<PathBuf>,
        /// Check as of this date (YYYY-MM-DD; default today), for reproducible results
        #[arg(long)]
        now: Option<chrono::NaiveDate>,
    },
    /// Run drill scenarios (files, folders, or runbook ids; default: every scenario in drills/)
    Drill(DrillArgs),
    /// Replay a past run's transcript against a runbook version (by default the recorded one):
    /// every call answered from the transcript, nothing sent; exit 0 when it does what the
    /// incident did, 1 when it diverges (listed step by step), 2 when the transcript cannot be replayed
    Replay(ReplayArgs),
    /// List the runbooks in the runbook folders (with the alerts each answers)
    List {
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Only the runbooks that answer this alert (exit 1 when none does)
        #[arg(long, value_name = "NAME")]
        alert: Option<String>,
    },
    /// Print a runbook's metadata and steps as Markdown
    Show {
        /// A runbook file, or ID[@VERSION]
        #[arg(add = ArgValueCandidates::new(complete::targets))]
        target: String,
        /// `json`: the metadata, parameters and steps as one JSON document (docs/json.md)
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Verify, show or render a run transcript
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// The shared state backend ([state] in runbook.toml): create it, check access
    #[command(subcommand)]
    State(StateCommand),
    /// Continue an interrupted run from its transcript (appending to it)
    #[command(
        mut_arg("params", |a| a.help("Secret parameters, given again (they were never recorded), as NAME=VALUE")),
        mut_arg("max_resources", |a| a.help("A tighter cap than the run started with (the recorded one always holds)")),
        mut_arg("kill_switch", |a| a.help("A kill switch, when the run started without one (the recorded one always holds)")),
    )]
    Resume(ResumeArgs),
    /// Approve (or deny) a run's pending approval request, as yourself: your local account, or your STS identity with the aws state backend (RUNBOOK_OPERATOR is only a claimed name)
    Approve {
        /// The run id (its transcript is searched under RUNBOOK_TRANSCRIPTS or ./transcripts)
        run_id: String,
        /// The run's transcript, when it is elsewhere
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// Which request (default: the newest)
        #[arg(long)]
        request: Option<u32>,
        /// Deny instead of approving
        #[arg(long)]
        deny: bool,
    },
    /// Every binding at a prompt, recorded in a session transcript
    Repl {
        /// The environment (from runbook.toml; default: its `default`, else `sim`)
        #[arg(long = "env", env = "RUNBOOK_ENV", add = ArgValueCandidates::new(complete::environments))]
        env: Option<String>,
        /// Where to write the session transcript
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// Start in plan mode (mutating calls recorded, not sent)
        #[arg(long)]
        plan: bool,
    },
    /// Tier 1: receive alerts over HTTP (Alertmanager, SNS, signed webhooks) and start the
    /// runbooks hooks.toml routes them to, under guardrails; escalate when they trip
    Serve {
        /// The routing and guardrails file [default: hooks.toml in the project's folder]
        #[arg(long, value_name = "FILE", env = "RUNBOOK_HOOKS")]
        hooks: Option<PathBuf>,
        /// Listen here instead of hooks.toml's server.listen (port 0 picks a free one)
        #[arg(long, value_name = "ADDR", env = "RUNBOOK_LISTEN")]
        listen: Option<String>,
        /// Once listening, write the bound address to this file
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
        /// Serve /healthz and /metrics on this address too, on connections of their own,
        /// instead of hooks.toml's server.probe_listen (port 0 picks a free one)
        #[arg(long, value_name = "ADDR", env = "RUNBOOK_PROBE_LISTEN")]
        probe_listen: Option<String>,
        /// Once listening, write the probe address to this file
        #[arg(long, value_name = "PATH")]
        probe_addr_file: Option<PathBuf>,
        /// Only check hooks.toml (every route's runbook, pin, parameters and environment) and
        /// print the routes; start nothing
        #[arg(long)]
        check: bool,
        /// Only probe a running server's /healthz (at URL, or the address in --addr-file, or
        /// --listen, or hooks.toml's server.listen) for a container's HEALTHCHECK: exit 0 when
        /// it answers 200, 1 otherwise
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", conflicts_with = "check")]
        healthcheck: Option<String>,
    },
    /// Handle one alert payload from stdin exactly as `serve` would (for cron or exec
    /// integrations); its runs finish before this returns
    Hook {
        /// What sent the payload
        #[arg(long, value_enum, required_unless_present = "reset_breakers")]
        source: Option<crate::front::hooks::Source>,
        /// The routing and guardrails file [default: hooks.toml in the project's folder]
        #[arg(long, value_name = "FILE", env = "RUNBOOK_HOOKS")]
        hooks: Option<PathBuf>,
        /// Instead: close open circuit breakers in the saved state (all, or `--scope RUNBOOK`);
        /// with `[state] backend = "aws"`, in the state table, for every replica
        #[arg(long)]
        reset_breakers: bool,
        /// With --reset-breakers: only this runbook's breaker (`*` is the overall one)
        #[arg(long, requires = "reset_breakers")]
        scope: Option<String>,
    },
    /// Print the API reference of every function a runbook can call (or `docs drills`: the
    /// drill scenario format; `docs transcript`: the transcript format)
    Docs {
        /// `api` (default), `drills` or `transcript`
        #[arg(value_enum, default_value = "api")]
        topic: DocsTopic,
    },
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// Print the manual page, or write one per command into --dir (for packagers)
    #[command(hide = true)]
    Man {
        /// Write runbook.1 and a page per subcommand here, instead of runbook.1 to stdout
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// What `runbook docs` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DocsTopic {
    /// The functions a runbook can call, and what mutating ones return in a plan
    Api,
    /// The drill scenario format (`drills/*.toml`)
    Drills,
    /// The transcript format: every event type and its fields
    Transcript,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Human,
    Json,
}

/// What `run`, `plan` and `resume` share: the parameters, the protected environment's
/// confirmation, the guardrails and the simulated cloud's state.
#[derive(Debug, Args)]
pub(crate) struct LaunchArgs {
    /// A parameter, as NAME=VALUE (repeatable)
    #[arg(short = 'p', long = "param", value_parser = parse_param,
          add = ArgValueCandidates::new(complete::params))]
    pub(crate) params: Vec<(String, String)>,
    /// Confirm mutating calls in a protected environment by naming it (e.g. --confirm-env prod)
    #[arg(long, value_name = "ENV")]
    pub(crate) confirm_env: Option<String>,
    /// With the sim backend: write the simulated cloud's final state here (JSON)
    #[arg(long, value_name = "PATH")]
    pub(crate) sim_state_out: Option<PathBuf>,
    /// Refuse any write that would make this run change more than N distinct resources
    #[arg(long, value_name = "N")]
    pub(crate) max_resources: Option<usize>,
    /// Refuse every write while this file exists (an emergency stop for unattended runs)
    #[arg(long, value_name = "PATH", env = "RUNBOOK_KILL_SWITCH")]
    pub(crate) kill_switch: Option<PathBuf>,
    /// When another run holds a target this one acts on, wait up to this long for it (runs
    /// only: a plan takes no lock)
    #[arg(long, value_name = "DURATION", value_parser = crate::base::clock::parse_duration)]
    pub(crate) wait_lock: Option<std::time::Duration>,
}

/// How a person drives a run that acts (`run`, `resume`).
#[derive(Debug, Args)]
pub(crate) struct DriveArgs {
    /// Give confirmation in advance to steps that ask for it (recorded as your decision)
    #[arg(long)]
    pub(crate) yes: bool,
    /// Ask before every step (the default when stdin is a terminal and --yes is not given)
    #[arg(long, conflicts_with = "no_interactive")]
    pub(crate) interactive: bool,
    /// Never ask: run unattended even on a terminal
    #[arg(long)]
    pub(crate) no_interactive: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// A runbook file, or ID[@VERSION] (the version pin refuses any other version)
    #[arg(add = ArgValueCandidates::new(complete::targets))]
    pub(crate) target: String,
    /// Where to write the transcript (default: transcripts/YYYY-MM-DD/<run-id>.jsonl)
    #[arg(long)]
    pub(crate) transcript: Option<PathBuf>,
    /// The environment to run against, from runbook.toml (default: its `default`, else `sim`)
    #[arg(long = "env", env = "RUNBOOK_ENV", add = ArgValueCandidates::new(complete::environments))]
    pub(crate) env: Option<String>,
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
    /// `json`: one JSON document on stdout (docs/json.md), progress on stderr
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) common: PlanArgs,
    #[command(flatten)]
    pub(crate) drive: DriveArgs,
    /// Same as `runbook plan`
    #[arg(long)]
    pub(crate) plan: bool,
    /// Unattended: a step that asks for confirmation waits this long for `runbook approve`
    /// (instead of stopping the run)
    #[arg(long, value_name = "DURATION", value_parser = crate::base::clock::parse_duration)]
    pub(crate) approval_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The run's transcript
    pub(crate) transcript: PathBuf,
    /// Accept that the runbook changed since the run started (recorded)
    #[arg(long)]
    pub(crate) allow_changed: bool,
    #[command(flatten)]
    pub(crate) drive: DriveArgs,
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
    /// `json`: one JSON document on stdout (docs/json.md), progress on stderr
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct DrillArgs {
    #[command(subcommand)]
    pub(crate) command: Option<DrillCommand>,
    pub(crate) targets: Vec<PathBuf>,
    /// The scenarios folder [default: drills in the project's folder]
    #[arg(long, value_name = "DIR")]
    pub(crate) drills: Option<PathBuf>,
    /// Where each drill's transcript is kept [default: drills/out in the project's folder]
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Where passing drills leave their dated records (read by `check --policy`) [default:
    /// drills/results in the project's folder]
    #[arg(long, value_name = "DIR")]
    pub(crate) results: Option<PathBuf>,
    /// Write JUnit XML here
    #[arg(long)]
    pub(crate) junit: Option<PathBuf>,
    /// Write a Markdown report here
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// Scenarios run at once
    #[arg(long, default_value_t = 2)]
    pub(crate) jobs: usize,
    /// `json`: one JSON document on stdout (docs/json.md), progress on stderr
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub(crate) output: Output,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DrillCommand {
    /// Write a drill scenario from a real run's transcript, to stdout
    /// (`runbook drill capture T.jsonl > drills/NAME.toml`): the sim seeded from what the run
    /// read, its faults scripted, its outcome expected
    Capture {
        /// The run's transcript (verified first)
        transcript: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The run's transcript (verified first)
    pub(crate) transcript: PathBuf,
    /// The version to replay: a runbook file or ID@VERSION (default: the file the run recorded,
    /// refused unless its sha256 is the recorded one)
    #[arg(long)]
    pub(crate) runbook: Option<String>,
    /// A parameter over the recorded ones, as NAME=VALUE (one the new version added)
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    pub(crate) params: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub(crate) output: Output,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TranscriptCommand {
    /// Check the hash chain, that every line is in its canonical form and that the run finished;
    /// with [state] backend = "aws", also that its last hash is the head the table holds for the
    /// run (so a cut tail or a rewritten file fails); exit 1 naming the first broken line
    Verify {
        /// A transcript file, or s3://BUCKET/KEY (aws backend)
        file: String,
        /// Accept a run that never finished (crashed or still running; `runbook resume` continues it)
        #[arg(long)]
        allow_unfinished: bool,
        /// Also check the HMAC signatures made with this key (RUNBOOK_SIGNING_KEY_FILE when the
        /// run was recorded): every signature must hold and the transcript must end with one
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Check the chain alone, not the head in the state table (a run made under the local
        /// backend; journals, plans and drills are never archived and only their chain is checked)
        #[arg(long)]
        chain_only: bool,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// A readable timeline of the run: a file, s3://BUCKET/KEY, or a run id (found in the
    /// state table with the aws backend, under the transcripts folder with local)
    Show {
        run: String,
        /// `json`: the run's summary and every event as one JSON document (docs/json.md)
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// An incident timeline for the post-incident review
    Render {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = RenderFormat::Md)]
        format: RenderFormat,
    },
    /// The runs recorded (newest first): the team's, from the state table with the aws backend;
    /// this host's transcripts folder (RUNBOOK_TRANSCRIPTS or ./transcripts) with local
    List {
        /// Only runs of this runbook (ID or ID@VERSION)
        #[arg(long, value_name = "ID")]
        runbook: Option<String>,
        /// Only runs on this target (local backend: a run with a parameter of this value)
        #[arg(long, value_name = "X")]
        target: Option<String>,
        /// Only runs started since: YYYY-MM-DD, an RFC 3339 time, or a duration ago (24h, 7d)
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// At most this many (the newest)
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Finish the transcript uploads left pending on this host (aws backend): exit 69 while
    /// any remains
    Upload,
    /// Apply the retention policy ([retention] in hooks.toml) to `serve`'s transcripts folder:
    /// delete runs (transcript, notes, approvals) and closed hook journals older than keep_days,
    /// then the oldest while over max_size; never a run still running, and with the aws
    /// backend never one whose upload is still pending. Prints every file and the exact counts
    Prune {
        /// The hooks file whose [server] transcripts and [retention] apply [default: hooks.toml
        /// in the project's folder]
        #[arg(long, value_name = "FILE", env = "RUNBOOK_HOOKS")]
        hooks: Option<PathBuf>,
        /// Say what would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Instead of [retention] keep_days
        #[arg(long, value_name = "DAYS")]
        keep_days: Option<u32>,
        /// Instead of [retention] max_size (20GB, 500MB, bytes)
        #[arg(long, value_name = "SIZE", value_parser = crate::front::hooks::config::parse_size)]
        max_size: Option<u64>,
    },
    /// Fetch a run's transcript by run id into a new local file, verified (aws backend: from the
    /// bucket, joined up to the last archived step when the run was cut off), to read it or to
    /// take the run over here with `runbook resume FILE`
    Fetch {
        run_id: String,
        /// Where to write it (must not exist; default: transcripts/DATE/RUN_ID.jsonl under
        /// RUNBOOK_TRANSCRIPTS or ./transcripts)
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Create the DynamoDB table and S3 bucket of `[state] backend = "aws"` (what exists is
    /// kept) and print the least-privilege IAM policies
    Init,
    /// Check that this identity can use the table and bucket
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RenderFormat {
    Md,
    /// One self-contained HTML file, for sharing
    Html,
}

/// `NAME=VALUE`. Text without a name is kept as an empty name for `resolve_params` to refuse:
/// clap would quote the whole text in its error, and `--param` is how secrets are given.
pub(crate) fn parse_param(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Ok((String::new(), String::new())),
    }
}
