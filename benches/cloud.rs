//! Cloud benchmarks; the numbers go to docs/benchmarks.md. Run with `cargo bench --bench cloud`
//! (needs `moto_server` and `python3` with boto3, both installed by `pip install 'moto[server]'`).
//!
//! 1. `ec2-compromised-instance` end to end, `runbook` against the equivalent boto3 script
//!    (benches/boto3_compromised.py): same calls, same moto server, start-up included, alternating
//!    which goes first so neither always meets a warmer server.
//! 2. Fan-out over 1,000 sim instances with 20 ms injected latency per API call, at concurrency C:
//!    `ec2::tag` (one instance per CreateTags call) and `ssm::run_command` (one result request per
//!    instance), against the ceil(N/C) x 20 ms floor.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]
#![allow(dead_code)]

// The bench borrows the tests' workspace builder and uses only a little of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::Moto;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const ROUNDS: usize = 5;
const FLEET: usize = 1000;
const LATENCY_MS: u64 = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("spawn");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn with_aws(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn versus_boto3() {
    let moto = Moto::start();
    let ws = moto.workspace("123456789012");
    // moto loads its EC2 backend on the first call (about a second): pay it before measuring.
    moto.seed();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (a, _) = moto.seed();
        let (b, _) = moto.seed();
        let incident = format!("2026-1123-{round:03}");
        let mut rb = Command::new(env!("CARGO_BIN_EXE_runbook"));
        rb.current_dir(ws.path()).args([
            "run",
            "ec2-compromised-instance",
            "--runbooks",
            &format!("{REPO}/runbooks"),
            "--env",
            "moto",
            "--yes",
            "--quiet",
            "--param",
            &format!("instance_id={a}"),
            "--param",
            &format!("incident={incident}"),
            "--transcript",
            &format!("t{round}.jsonl"),
        ]);
        with_aws(&mut rb);
        let mut py = Command::new("python3");
        py.args([
            &format!("{REPO}/benches/boto3_compromised.py"),
            &moto.endpoint(),
            &b,
            &incident,
        ]);
        with_aws(&mut py);
        if round % 2 == 0 {
            ours.push(timed(&mut rb));
            theirs.push(timed(&mut py));
        } else {
            theirs.push(timed(&mut py));
            ours.push(timed(&mut rb));
        }
    }
    let (o, t) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "## ec2-compromised-instance on moto, {ROUNDS} rounds (median wall time, start-up included)\n"
    );
    println!("| tool | median | all runs |\n|---|---|---|");
    println!("| runbook (release) | {o:.0?} | {ours:.0?} |");
    println!("| boto3 script | {t:.0?} | {theirs:.0?} |");
    println!(
        "\nratio boto3 / runbook: {:.2}x\n",
        t.as_secs_f64() / o.as_secs_f64()
    );
}

fn fan_out() {
    let ws = common::Workspace::new();
    let mut fleet = format!("[faults]\nlatency_ms = {LATENCY_MS}\n");
    for n in 0..FLEET {
        fleet.push_str(&format!(
            "[[instances]]\nid = \"i-0f{n:015x}\"\nvpc = \"vpc-1\"\nsubnet = \"subnet-1\"\ntags = {{ Service = \"fleet\" }}\n"
        ));
    }
    ws.write("fleet.toml", &fleet);
    ws.write(
        "runbook.toml",
        "[environments.fleet]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n",
    );
    ws.write(
        "runbooks/fanout.rhai",
        r#"runbook(#{ id: "fanout", version: "1.0.0", title: "fan-out", severity: "P4",
  params: #{ c: #{ type: "int", required: true } } });
containment("Find", |ctx| { ctx.ids = ec2::find(#{ tags: #{ Service: "fleet" } }).map(|i| i.id); });
eradication("Tag", |ctx| { ec2::tag(ctx.ids, #{ Patched: "yes" }, #{ chunk: 1, concurrency: ctx.c }); });
recovery("Command", |ctx| {
    let r = ssm::run_command(#{ instances: ctx.ids, commands: ["uptime"], max_concurrency: ctx.c, poll: "1ms" });
    assert(r.succeeded == ctx.ids.len(), "every instance answered");
});
"#,
    );
    println!("## Fan-out over {FLEET} sim instances, {LATENCY_MS} ms per API call\n");
    println!(
        "| C | floor ceil(N/C) x {LATENCY_MS} ms | ec2::tag | ratio | ssm::run_command | ratio | ratio to floor + SendCommand |\n|---|---|---|---|---|---|---|"
    );
    for c in [10_usize, 50, 100, 200] {
        let t = format!("fan{c}.jsonl");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
        cmd.current_dir(ws.path()).args([
            "run",
            "fanout",
            "--env",
            "fleet",
            "--quiet",
            "--param",
            &format!("c={c}"),
            "--transcript",
            &t,
        ]);
        timed(&mut cmd);
        let ev = common::events(&ws.path().join(&t));
        let took = |binding: &str| {
            common::of_type(&ev, "call")
                .iter()
                .find(|e| e["binding"] == binding)
                .and_then(|e| e["duration_ms"].as_u64())
                .unwrap_or(0)
        };
        let floor = FLEET.div_ceil(c) as u64 * LATENCY_MS;
        let (tag, cmd_ms) = (took("ec2::tag"), took("ssm::run_command"));
        println!(
            "| {c} | {floor} ms | {tag} ms | {:.2}x | {cmd_ms} ms | {:.2}x | {:.2}x |",
            tag as f64 / floor as f64,
            cmd_ms as f64 / floor as f64,
            cmd_ms as f64 / (floor + LATENCY_MS) as f64
        );
    }
    println!(
        "\n(run_command includes its one SendCommand call, {LATENCY_MS} ms, on top of the per-instance results.)"
    );
}

fn main() {
    // `cargo bench` passes libtest flags such as --bench; only a name filter is honoured.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wants("fanout") {
        fan_out();
    }
    if wants("boto3") {
        versus_boto3();
    }
}
