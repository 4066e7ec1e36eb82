//! The command line's shape: flags shared between commands stay listed by each.

use crate::common::Workspace;

/// The flags `run`, `plan` and `resume` take from one shared group.
const LAUNCH_FLAGS: [&str; 5] = [
    "--param",
    "--confirm-env",
    "--sim-state-out",
    "--max-resources",
    "--kill-switch",
];

/// The flags `run` and `resume` share for driving a run.
const DRIVE_FLAGS: [&str; 3] = ["--yes", "--interactive", "--no-interactive"];

/// The options `runbook COMMAND --help` lists (each option line's long flag).
fn listed(command: &str) -> Vec<String> {
    let help = Workspace::new().run(&[command, "--help"]);
    help.expect_code(0);
    help.stdout
        .lines()
        .filter_map(|l| {
            // `-p, --param <PARAMS>`: the long flag after the short one.
            let l = l.trim_start();
            let l = l.strip_prefix("-p, ").unwrap_or(l);
            l.starts_with("--")
                .then(|| l.split_whitespace().next().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn run_and_resume_help_both_list_the_shared_flags() {
    let run = listed("run");
    let resume = listed("resume");
    for flag in LAUNCH_FLAGS.iter().chain(&DRIVE_FLAGS) {
        assert!(
            run.iter().any(|f| f == flag),
            "run --help lacks {flag}: {run:?}"
        );
        assert!(
            resume.iter().any(|f| f == flag),
            "resume --help lacks {flag}: {resume:?}"
        );
    }
    for flag in ["--plan", "--approval-timeout", "--transcript", "--env"] {
        assert!(run.iter().any(|f| f == flag), "run --help lacks {flag}");
    }
    assert!(resume.iter().any(|f| f == "--allow-changed"));
}

#[test]
fn plan_help_lists_the_shared_launch_flags_but_none_for_driving() {
    let plan = listed("plan");
    for flag in LAUNCH_FLAGS {
        assert!(
            plan.iter().any(|f| f == flag),
            "plan --help lacks {flag}: {plan:?}"
        );
    }
    for flag in DRIVE_FLAGS {
        assert!(!plan.iter().any(|f| f == flag), "plan --help lists {flag}");
    }
}

#[test]
fn resume_help_keeps_its_own_words_for_the_flags_it_means_differently() {
    let help = Workspace::new().run(&["resume", "--help"]);
    let text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("Secret parameters, given again"), "{text}");
    assert!(
        text.contains("A tighter cap than the run started with"),
        "{text}"
    );
    assert!(
        text.contains("A kill switch, when the run started without one"),
        "{text}"
    );
}
