//! The AWS backend against a real emulator (moto's server), and the conformance of the sim with it.
//!
//! What moto really models (EC2 instances, network interfaces, security groups, snapshots, images,
//! tags, SSM parameters and command records) is compared for real. What it fakes is covered in the
//! sim instead: `SendCommand`/`GetCommandInvocation` answer Success at once with empty output, and
//! `ListCommandInvocations` is not implemented at all (so the bindings never use it: results are
//! read per instance with `GetCommandInvocation`, concurrently). `DescribeInstancePatchStates`
//! (Patch Manager's compliance) is not implemented: the patch runbook's conformance stops there.

use crate::common;

use common::moto::{Moto, block, compromised, with_credentials};
use common::{Workspace, events, of_type};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SIM_BLUE_1: &str = "i-0a1b2c3d4e5f60001";
const SIM_WORKER: &str = "i-0a1b2c3d4e5f60005";

fn run(ws: &Workspace, args: &[&str]) -> common::Run {
    with_credentials(ws.cmd()).args(args).output()
}

/// (step title, status) of every finished step.
fn outcomes(ev: &[Value]) -> Vec<(String, String)> {
    let steps = ev[0]["steps"].as_array().unwrap();
    of_type(ev, "step_finished")
        .iter()
        .map(|e| {
            let i = e["step"].as_u64().unwrap() as usize;
            (
                steps[i]["title"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn writes(ev: &[Value]) -> Vec<String> {
    of_type(ev, "call")
        .iter()
        .filter(|c| c["mutating"] == true && c["planned"] == false)
        .map(|c| c["binding"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_compromised_instance_runbook_agrees_between_the_sim_and_moto() {
    let moto = Moto::start();
    let (blue, _) = moto.seed();
    let ws = moto.workspace("123456789012");

    compromised(&ws, "moto", &blue, "moto.jsonl").expect_code(0);
    compromised(&ws, "drill", SIM_BLUE_1, "sim.jsonl").expect_code(0);
    let on_moto = events(&ws.path().join("moto.jsonl"));
    let on_sim = events(&ws.path().join("sim.jsonl"));
    assert_eq!(outcomes(&on_moto), outcomes(&on_sim));
    assert_eq!(writes(&on_moto), writes(&on_sim));
    assert_eq!(on_moto[0]["account"], "123456789012");
    assert_eq!(on_moto[0]["backend"], "aws");
    // AWS request ids reach the transcript.
    let isolate = of_type(&on_moto, "call")
        .into_iter()
        .find(|c| c["binding"] == "ec2::isolate")
        .unwrap();
    assert!(
        !isolate["request_ids"].as_array().unwrap().is_empty(),
        "{isolate}"
    );

    // The effects, read back from the emulator with the SDK.
    block(async {
        let ec2 = moto.ec2();
        let out = ec2.describe_instances().send().await.unwrap();
        let all: Vec<_> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().to_vec())
            .collect();
        let old = all
            .iter()
            .find(|i| i.instance_id() == Some(blue.as_str()))
            .unwrap();
        assert_eq!(old.state().unwrap().name().unwrap().as_str(), "terminated");
        let replacement = all
            .iter()
            .find(|i| {
                i.tags()
                    .iter()
                    .any(|t| t.key() == Some("ReplacementFor") && t.value() == Some(blue.as_str()))
            })
            .expect("a replacement tagged ReplacementFor");
        assert_eq!(
            replacement.state().unwrap().name().unwrap().as_str(),
            "running"
        );

        let groups = ec2.describe_security_groups().send().await.unwrap();
        let q = groups
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some("runbook-quarantine"))
            .expect("the quarantine group");
        assert!(q.ip_permissions().is_empty(), "no ingress");
        assert!(q.ip_permissions_egress().is_empty(), "no egress");

        let snaps = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
        let ours: Vec<_> = snaps
            .snapshots()
            .iter()
            .filter(|s| {
                s.tags()
                    .iter()
                    .any(|t| t.key() == Some("Incident") && t.value() == Some("2026-1123-004"))
            })
            .collect();
        assert_eq!(ours.len(), 2, "one snapshot per attached volume");
        let images = ec2.describe_images().owners("self").send().await.unwrap();
        assert!(images.images().iter().any(|i| {
            i.name()
                .is_some_and(|n| n.starts_with("forensics-2026-1123-004"))
        }));
    });
}

#[test]
fn the_high_cpu_runbook_agrees_as_far_as_moto_models_run_command() {
    let moto = Moto::start();
    let (_, worker) = moto.seed();
    let ws = moto.workspace("123456789012");
    let runbooks = format!("{REPO}/runbooks");
    let on = |env: &str, id: &str, t: &str| {
        let id = format!("instance_id={id}");
        run(
            &ws,
            &[
                "run",
                "ec2-high-cpu",
                "--runbooks",
                &runbooks,
                "--env",
                env,
                "--param",
                &id,
                "--transcript",
                t,
            ],
        )
    };
    on("drill", SIM_WORKER, "sim.jsonl").expect_code(0);
    // moto holds no CloudWatch datapoints for the worker (nothing put any): the runbook trusts
    // the alert, restarts, and refuses to declare recovery without a CPU reading, which is the
    // correct behaviour without evidence.
    let moto_run = on("moto", &worker, "moto.jsonl");
    moto_run.expect_code(1);
    assert!(
        moto_run.stderr.contains("no CPU reading"),
        "{}",
        moto_run.stderr
    );
    let on_moto = events(&ws.path().join("moto.jsonl"));
    let on_sim = events(&ws.path().join("sim.jsonl"));
    assert_eq!(outcomes(&on_moto)[..2], outcomes(&on_sim)[..2]);
    assert_eq!(
        writes(&on_moto)[..3],
        writes(&on_sim)[..3],
        "diagnostics, notes, restart"
    );
    let sent = block(async {
        moto.ssm()
            .list_commands()
            .send()
            .await
            .unwrap()
            .commands()
            .len()
    });
    assert_eq!(
        sent, 2,
        "diagnostics and restart reached SSM (recovery is read from CloudWatch)"
    );
}

/// Everything a plan could change, as moto reports it.
fn cloud_state(moto: &Moto) -> String {
    block(async {
        let ec2 = moto.ec2();
        let mut out = String::new();
        let inst = ec2.describe_instances().send().await.unwrap();
        for r in inst.reservations() {
            for i in r.instances() {
                let enis: Vec<Vec<&str>> = i
                    .network_interfaces()
                    .iter()
                    .map(|n| n.groups().iter().filter_map(|g| g.group_id()).collect())
                    .collect();
                let mut tags: Vec<String> = i
                    .tags()
                    .iter()
                    .map(|t| format!("{:?}={:?}", t.key(), t.value()))
                    .collect();
                tags.sort();
                out.push_str(&format!(
                    "{:?} {:?} {enis:?} {tags:?}\n",
                    i.instance_id(),
                    i.state().and_then(|s| s.name())
                ));
            }
        }
        let mut groups: Vec<String> = ec2
            .describe_security_groups()
            .send()
            .await
            .unwrap()
            .security_groups()
            .iter()
            .map(|g| format!("{:?}", g.group_id()))
            .collect();
        groups.sort();
        out.push_str(&format!("groups {groups:?}\n"));
        let snaps = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
        out.push_str(&format!("snapshots {}\n", snaps.snapshots().len()));
        let images = ec2.describe_images().owners("self").send().await.unwrap();
        out.push_str(&format!("images {}\n", images.images().len()));
        let commands = moto.ssm().list_commands().send().await.unwrap();
        out.push_str(&format!("commands {}\n", commands.commands().len()));
        out
    })
}

#[test]
fn a_plan_on_moto_changes_nothing() {
    let moto = Moto::start();
    let (blue, worker) = moto.seed();
    let ws = moto.workspace("123456789012");
    let runbooks = format!("{REPO}/runbooks");
    let before = cloud_state(&moto);
    let blue = format!("instance_id={blue}");
    let plan = run(
        &ws,
        &[
            "plan",
            "ec2-compromised-instance",
            "--runbooks",
            &runbooks,
            "--env",
            "moto",
            "--param",
            &blue,
            "--param",
            "incident=2026-1123-005",
            "--transcript",
            "p1.jsonl",
        ],
    );
    plan.expect_code(0);
    for binding in [
        "ec2::isolate",
        "ec2::snapshot_volumes",
        "ec2::tag",
        "ec2::stop",
        "ec2::create_image",
        "ec2::terminate",
        "ec2::launch",
    ] {
        assert!(
            plan.stdout.contains(binding),
            "{binding} missing from the plan:\n{}",
            plan.stdout
        );
    }
    let worker = format!("instance_id={worker}");
    run(
        &ws,
        &[
            "plan",
            "ec2-high-cpu",
            "--runbooks",
            &runbooks,
            "--env",
            "moto",
            "--param",
            &worker,
            "--transcript",
            "p2.jsonl",
        ],
    );
    let p2 = events(&ws.path().join("p2.jsonl"));
    assert!(p2.iter().any(|e| e["type"] == "call"
        && e["binding"] == "ssm::run_command"
        && e["planned"] == true));
    // The CPU runbook declares its `top`/`ps` diagnostics read-only: a plan runs those (and only
    // those) for real, so moto's command history is the one thing that may grow, by exactly them.
    let writes: Vec<&Value> = p2
        .iter()
        .filter(|e| e["type"] == "call" && e["planned"] == false && e["mutating"] == true)
        .collect();
    assert!(writes.is_empty(), "a plan sent a write: {writes:?}");
    let sent: Vec<&Value> = p2
        .iter()
        .filter(|e| {
            e["type"] == "call"
                && e["planned"] == false
                && e["read_only"] == "declared by the runbook"
        })
        .collect();
    assert!(!sent.is_empty(), "the diagnostics ran in the plan");
    let commands = |state: &str| -> usize {
        state
            .lines()
            .find_map(|l| l.strip_prefix("commands "))
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    let after = cloud_state(&moto);
    assert_eq!(commands(&after), commands(&before) + sent.len());
    let without_commands = |state: &str| -> String {
        state
            .lines()
            .filter(|l| !l.starts_with("commands "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_commands(&after),
        without_commands(&before),
        "a plan must leave the cloud exactly as it was"
    );
}

#[test]
fn aws_errors_keep_their_code_and_request_id_and_are_catchable() {
    let moto = Moto::start();
    moto.seed();
    let ws = moto.workspace("123456789012");
    ws.write(
        "runbooks/probe.rhai",
        r#"runbook(#{ id: "probe", version: "1.0.0", title: "t", severity: "P3" });
containment("Probe", |ctx| {
    try { ec2::describe("i-00000000deadbeef"); } catch (e) { ctx.code = e.code; }
    ctx.api = ec2::find(#{ tags: #{ Name: "api-blue-1" } }).len();
    ec2::stop("i-00000000deadbeef");
});
"#,
    );
    let r = run(
        &ws,
        &["run", "probe", "--env", "moto", "--transcript", "t.jsonl"],
    );
    r.expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    let end = &of_type(&ev, "step_finished")[0];
    assert_eq!(end["ctx"]["code"], "InvalidInstanceID.NotFound");
    assert_eq!(end["ctx"]["api"], 1);
    assert_eq!(end["error"]["code"], "InvalidInstanceID.NotFound");
    let failed: Vec<&Value> = of_type(&ev, "call")
        .into_iter()
        .filter(|c| !c["error"].is_null())
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed.iter().all(|c| c["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())),
        "{failed:?}"
    );
}

#[test]
fn credentials_for_another_account_are_refused_before_anything_runs() {
    let moto = Moto::start();
    let ws = moto.workspace("999999999999");
    let runbooks = format!("{REPO}/runbooks");
    let r = run(
        &ws,
        &[
            "run",
            "ec2-compromised-instance",
            "--runbooks",
            &runbooks,
            "--env",
            "moto",
            "--param",
            "instance_id=i-0123456789abcdef0",
            "--param",
            "incident=2026-1123-006",
            "--transcript",
            "t.jsonl",
        ],
    );
    // The credentials belong to another account: the environment refused, exit 69.
    r.expect_code(69);
    assert!(
        r.stderr
            .contains("resolve to account 123456789012, not 999999999999"),
        "{}",
        r.stderr
    );
    assert!(!ws.exists("t.jsonl"));
}

#[test]
fn killed_mid_run_on_moto_and_resumed_nothing_is_created_twice() {
    let runbooks = format!("{REPO}/runbooks");
    for point in [5_usize, 11, 19] {
        let moto = Moto::start();
        let (blue, _) = moto.seed();
        let ws = moto.workspace("123456789012");
        let id = format!("instance_id={blue}");
        let killed = with_credentials(ws.cmd())
            .env("RUNBOOK_TEST_KILL_AFTER_EVENTS", &point.to_string())
            .args(&[
                "run",
                "ec2-compromised-instance",
                "--runbooks",
                &runbooks,
                "--env",
                "moto",
                "--yes",
                "--no-interactive",
                "--param",
                &id,
                "--param",
                "incident=2026-1123-012",
                "--transcript",
                "t.jsonl",
            ])
            .output();
        assert_eq!(killed.code, -1, "point {point}: killed by the signal");
        let resumed = run(&ws, &["resume", "t.jsonl", "--yes", "--no-interactive"]);
        run(&ws, &["transcript", "verify", "t.jsonl"]).expect_code(0);
        assert!(
            resumed.code == 0 || resumed.stderr.contains("uncertain"),
            "point {point}: {}",
            resumed.stderr
        );
        block(async {
            let ec2 = moto.ec2();
            let groups = ec2.describe_security_groups().send().await.unwrap();
            let quarantine = groups
                .security_groups()
                .iter()
                .filter(|g| g.group_name() == Some("runbook-quarantine"))
                .count();
            assert_eq!(quarantine, 1, "point {point}: one quarantine group");
            let snaps = ec2
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await
                .unwrap();
            let snaps = snaps
                .snapshots()
                .iter()
                .filter(|s| {
                    s.tags()
                        .iter()
                        .any(|t| t.key() == Some("Incident") && t.value() == Some("2026-1123-012"))
                })
                .count();
            assert!(
                snaps <= 2,
                "point {point}: never more than one snapshot per volume"
            );
            let images = ec2.describe_images().owners("self").send().await.unwrap();
            let images = images
                .images()
                .iter()
                .filter(|i| {
                    i.name()
                        .is_some_and(|n| n.starts_with("forensics-2026-1123-012"))
                })
                .count();
            assert!(images <= 1, "point {point}: never two forensic images");
            let out = ec2.describe_instances().send().await.unwrap();
            let replacements = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter(|i| i.tags().iter().any(|t| t.key() == Some("ReplacementFor")))
                .count();
            assert!(replacements <= 1, "point {point}: never two replacements");
            if resumed.code == 0 {
                assert_eq!(
                    (snaps, images, replacements),
                    (2, 1, 1),
                    "point {point}: the run completed once"
                );
            }
        });
    }
}

#[test]
fn a_drill_can_run_against_the_emulator() {
    let moto = Moto::start();
    let (blue, _) = moto.seed();
    let ws = moto.workspace("123456789012");
    ws.write(
        "drills/on-moto.toml",
        &format!(
            "runbook = \"ec2-compromised-instance@1.1.0\"\n[emulator]\nendpoint = \"{}\"\n[params]\ninstance_id = \"{blue}\"\nincident = \"2026-1123-013\"\n[expect]\nstatus = \"ok\"\ncalls = [\"ec2::isolate\", \"ec2::snapshot_volumes\", \"ec2::tag\", \"ec2::stop\", \"ec2::create_image\", \"ec2::terminate\", \"ec2::launch\", \"notes::append\"]\n",
            moto.endpoint()
        ),
    );
    let runbooks = format!("{REPO}/runbooks");
    let r = run(
        &ws,
        &[
            "drill",
            "drills/on-moto.toml",
            "--runbooks",
            &runbooks,
            "--out",
            "out",
            "--results",
            "results",
        ],
    );
    r.expect_code(0);
    assert!(r.stdout.contains("pass  on-moto"), "{}", r.stdout);

    // Faults need the sim: refused with a clear reason, not silently ignored.
    ws.write(
        "drills/faulty.toml",
        &format!("runbook = \"ec2-compromised-instance@1.1.0\"\n[emulator]\nendpoint = \"{}\"\n[faults]\nthrottle_calls = [1]\n", moto.endpoint()),
    );
    let r = run(
        &ws,
        &[
            "drill",
            "drills/faulty.toml",
            "--runbooks",
            &runbooks,
            "--out",
            "out",
            "--results",
            "results",
        ],
    );
    r.expect_code(1);
    assert!(r.stdout.contains("need the sim"), "{}", r.stdout);
}

const HELLO: &str = r#"runbook(#{ id: "hello", version: "1.0.0", title: "Hello", severity: "P3" });
containment("Count", |ctx| { ctx.n = ec2::find(#{ tags: #{ Name: "api-blue-1" } }).len(); });
"#;

#[test]
fn the_banner_and_run_started_name_the_account_region_and_endpoint_resolved_from_the_environment() {
    let moto = Moto::start();
    let ws = Workspace::new();
    // No region or endpoint in runbook.toml: AWS_REGION and AWS_ENDPOINT_URL decide.
    ws.write(
        "runbook.toml",
        "[environments.ambient]\nbackend = \"aws\"\nmax_attempts = 1\n",
    );
    ws.write("runbooks/hello.rhai", HELLO);
    let r = with_credentials(ws.cmd())
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ENDPOINT_URL", &moto.endpoint())
        .args(&[
            "run",
            "hello",
            "--env",
            "ambient",
            "--transcript",
            "t.jsonl",
        ])
        .output();
    r.expect_code(0);
    let expected = format!(
        "env ambient: aws account 123456789012, region eu-west-1, endpoint {}",
        moto.endpoint()
    );
    assert!(r.stderr.contains(&expected), "{}", r.stderr);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev[0]["account"], "123456789012");
    assert_eq!(ev[0]["region"], "eu-west-1");
    assert_eq!(ev[0]["endpoint"], moto.endpoint().as_str());
}

#[test]
fn an_environment_endpoint_wins_over_aws_endpoint_url_and_a_refused_connection_names_the_url() {
    let moto = Moto::start();
    moto.seed();
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/hello.rhai", HELLO);
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| format!("http://127.0.0.1:{}", a.port()))
        .unwrap();
    let r = with_credentials(ws.cmd())
        .env("AWS_ENDPOINT_URL", &closed)
        .args(&["run", "hello", "--env", "moto", "--transcript", "t.jsonl"])
        .output();
    r.expect_code(0);
    assert!(
        r.stderr
            .contains(&format!("region us-east-1, endpoint {}", moto.endpoint())),
        "runbook.toml's endpoint is the one used: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "note: environment moto's endpoint {} is used, not AWS_ENDPOINT_URL={closed}",
            moto.endpoint()
        )),
        "{}",
        r.stderr
    );

    ws.write(
        "runbook.toml",
        &format!("[environments.down]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{closed}\"\nmax_attempts = 1\n"),
    );
    let r = with_credentials(ws.cmd())
        .args(&[
            "run",
            "hello",
            "--env",
            "down",
            "--transcript",
            "down.jsonl",
        ])
        .output();
    r.expect_code(1);
    assert!(
        r.stderr.contains(&format!("URL tried: {closed}")),
        "{}",
        r.stderr
    );
    let ev = events(&ws.path().join("down.jsonl"));
    let end = &of_type(&ev, "step_finished")[0];
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("URL tried: {closed}")),
        "{end}"
    );
}

#[test]
fn the_patch_runbook_sends_patch_baseline_to_moto_which_has_no_patch_compliance_to_read() {
    // moto records SendCommand of AWS-RunPatchBaseline with its parameters (compared here) but
    // does not implement DescribeInstancePatchStates: the run must fail there naming the
    // operation, never guess the compliance. The sim models both (drills/critical-security-patch-*).
    let moto = Moto::start();
    moto.seed();
    let ws = moto.workspace("123456789012");
    let runbooks = format!("{REPO}/runbooks");
    let r = run(
        &ws,
        &[
            "run",
            "critical-security-patch",
            "--runbooks",
            &runbooks,
            "--env",
            "moto",
            "--yes",
            "--param",
            "cve=CVE-2026-41234",
            "--param",
            "cvss=9.8",
            "--transcript",
            "moto.jsonl",
        ],
    );
    r.expect_code(1);
    assert!(
        r.stderr.contains("DescribeInstancePatchStates"),
        "{}",
        r.stderr
    );
    let ev = events(&ws.path().join("moto.jsonl"));
    assert_eq!(
        outcomes(&ev)[..2],
        [
            (
                "Confirm the patch is critical".to_string(),
                "ok".to_string()
            ),
            (
                "Find the instances missing the patches".to_string(),
                "failed".to_string()
            )
        ]
    );
    let commands = block(async { moto.ssm().list_commands().send().await.unwrap() });
    // The step ran twice (one retry), scanning each time; nothing was installed.
    let sent: Vec<(String, Vec<String>, usize)> = commands
        .commands()
        .iter()
        .map(|c| {
            (
                c.document_name().unwrap_or_default().to_string(),
                c.parameters()
                    .and_then(|p| p.get("Operation"))
                    .cloned()
                    .unwrap_or_default(),
                c.instance_ids().len(),
            )
        })
        .collect();
    let scan = (
        "AWS-RunPatchBaseline".to_string(),
        vec!["Scan".to_string()],
        2,
    );
    assert_eq!(sent, vec![scan.clone(), scan]);
}

/// The monthly backup restoration test's bindings on moto, which models `CreateVolume`,
/// `AttachVolume`, `DetachVolume`, `DeleteVolume` and `DescribeSnapshots`: the newest completed
/// snapshot of one instance's volume is restored and attached to another instance (seen attached
/// in moto's own state), then deleted (seen gone).
#[test]
fn a_snapshot_restored_to_another_instance_is_attached_in_moto_and_gone_once_deleted() {
    let moto = Moto::start();
    let (blue, worker) = moto.seed();
    let ws = moto.workspace("123456789012");
    let volume = block(async {
        let ec2 = moto.ec2();
        let out = ec2
            .describe_instances()
            .instance_ids(&blue)
            .send()
            .await
            .unwrap();
        let i = &out.reservations()[0].instances()[0];
        let volume = i.block_device_mappings()[1]
            .ebs()
            .and_then(|e| e.volume_id())
            .unwrap()
            .to_string();
        for _ in 0..2 {
            ec2.create_snapshot()
                .volume_id(&volume)
                .send()
                .await
                .unwrap();
        }
        volume
    });
    ws.write(
        "runbooks/restore.rhai",
        r#"runbook(#{ id: "restore", version: "1.0.0", title: "t", severity: "P3",
    params: #{ volume: #{ type: "string", required: true }, instance: #{ type: "string", required: true } } });
containment("Restore", |ctx| {
    let snaps = ec2::snapshots(#{ volume: ctx.volume, states: ["completed"] });
    ctx.count = snaps.len();
    ctx.start_time = snaps[0].start_time;
    let r = ec2::restore_volume(snaps[0].id, ctx.instance, #{ device: "/dev/sdf", every: "1s", timeout: "1m" });
    ctx.restored = r.volume;
    ctx.snapshot_ok = r.snapshot == snaps[0].id;
});
"#,
    );
    ws.write(
        "runbooks/cleanup.rhai",
        r#"runbook(#{ id: "cleanup", version: "1.0.0", title: "t", severity: "P3",
    params: #{ volume: #{ type: "string", required: true } } });
recovery("Delete", |ctx| {
    let d = ec2::delete_volume(ctx.volume, #{ every: "1s", timeout: "1m" });
    ctx.detached_from = d.detached_from;
    ctx.state = d.state;
});
"#,
    );
    let restore = run(
        &ws,
        &[
            "run",
            "restore",
            "--env",
            "moto",
            "--param",
            &format!("volume={volume}"),
            "--param",
            &format!("instance={worker}"),
            "--transcript",
            "r.jsonl",
        ],
    );
    restore.expect_code(0);
    let ev = events(&ws.path().join("r.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["count"], 2);
    assert_eq!(ctx["snapshot_ok"], true);
    assert!(ctx["start_time"].as_str().is_some_and(|t| !t.is_empty()));
    let restored = ctx["restored"].as_str().unwrap().to_string();
    let seen = block(async {
        let out = moto
            .ec2()
            .describe_volumes()
            .volume_ids(&restored)
            .send()
            .await
            .unwrap();
        let v = &out.volumes()[0];
        let a = &v.attachments()[0];
        (
            v.state().map(|s| s.as_str().to_string()),
            a.instance_id().map(str::to_string),
            a.device().map(str::to_string),
        )
    });
    assert_eq!(
        seen,
        (
            Some("in-use".into()),
            Some(worker.clone()),
            Some("/dev/sdf".into())
        )
    );

    let cleanup = run(
        &ws,
        &[
            "run",
            "cleanup",
            "--env",
            "moto",
            "--param",
            &format!("volume={restored}"),
            "--transcript",
            "c.jsonl",
        ],
    );
    cleanup.expect_code(0);
    let ev = events(&ws.path().join("c.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["detached_from"], worker.as_str());
    assert_eq!(ctx["state"], "deleted");
    let gone = block(async {
        moto.ec2()
            .describe_volumes()
            .volume_ids(&restored)
            .send()
            .await
            .map_err(|e| aws_sdk_ec2::error::ProvideErrorMetadata::code(&e).map(str::to_string))
    });
    assert_eq!(
        gone.err().flatten().as_deref(),
        Some("InvalidVolume.NotFound")
    );
}
