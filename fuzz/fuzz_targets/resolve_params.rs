//! Parameter resolution: `--param name=value` lists against a runbook's declared parameters
//! (types, required, defaults, patterns, choices, secrets). The input is a first line naming the
//! runbook (one of the repository's, or anything else for a built-in one declaring every kind
//! of parameter), then one `name=value` per line.
#![no_main]

use std::cell::RefCell;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use runbook::runbook::Runbook;

#[path = "common.rs"]
mod common;

/// Every type, required and optional, defaults, patterns, choices and a secret.
const ALL_KINDS: &str = r#"
runbook(#{
    id: "fuzz-params",
    version: "1.0.0",
    title: "Every kind of parameter",
    severity: "P3",
    service: "fuzz",
    owner: "fuzz",
    params: #{
        instance_id: #{ type: "string", required: true, pattern: "^i-[0-9a-f]{8,17}$" },
        service: #{ type: "string", "default": "worker", pattern: "^[A-Za-z0-9@._-]+$" },
        mode: #{ type: "string", "default": "restart", choices: ["restart", "reboot", "none"] },
        threshold: #{ type: "float", "default": 85.0 },
        samples: #{ type: "int", "default": 5 },
        limit: #{ type: "int", required: true },
        ratio: #{ type: "float" },
        allow_reboot: #{ type: "bool", "default": false },
        token: #{ type: "string", secret: true },
        note: #{ type: "string" },
    },
});
containment("Nothing", |ctx| { log(ctx.instance_id); });
"#;

const REPO: &[&str] = &[
    "api-high-latency",
    "api-server-errors",
    "ec2-compromised-instance",
    "ec2-high-cpu",
    "ec2-memory-high",
    "incident-record",
];

/// A resolve adds secret values to the runbook's redactor, which only grows: the loaded
/// runbooks are made again after this many inputs so a long run does not slow down (every
/// add sorts the list and every redaction walks it: at 2,000 the target ran at ~350 inputs/s).
const RELOAD_EVERY: u32 = 100;

struct Loaded {
    uses: u32,
    runbooks: Vec<Runbook>,
}

fn load_all() -> Vec<Runbook> {
    let mut all = Vec::new();
    for name in REPO {
        let path = common::runbook_path(&format!("{name}.rhai"));
        let rb = Runbook::load(&path, common::host())
            .unwrap_or_else(|e| panic!("the repository's runbook {name} must load: {e}"));
        all.push(rb);
    }
    let path = common::runbook_path("fuzz-params.rhai");
    all.push(
        Runbook::load_source(&path, ALL_KINDS, common::host(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the built-in runbook must load: {e}")),
    );
    all
}

thread_local! {
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let which = lines.next().unwrap_or_default();
    let given: Vec<(String, String)> = lines
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    LOADED.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|l| l.uses >= RELOAD_EVERY) {
            *slot = Some(Loaded {
                uses: 0,
                runbooks: load_all(),
            });
        }
        let Some(loaded) = slot.as_mut() else { return };
        loaded.uses += 1;
        let index = REPO.iter().position(|n| *n == which).unwrap_or(REPO.len());
        let rb = &loaded.runbooks[index];
        match rb.resolve_params(&given) {
            Ok(values) => {
                // Every declared parameter that has a value was checked; nothing undeclared
                // got through.
                for key in values.keys() {
                    assert!(
                        rb.param(key).is_some(),
                        "undeclared parameter {key} resolved"
                    );
                }
            }
            Err(e) => {
                let shown = render(&e);
                // A secret value is never echoed in an error. The value may still appear for
                // another reason (the same text given to a non-secret parameter, or part of the
                // runbook's source shown under the caret), so the check is differential: with
                // the secret replaced by a stand-in, the value must disappear from the error.
                for (i, (name, value)) in given.iter().enumerate() {
                    if value.len() < 8 || !rb.param(name).is_some_and(|p| p.secret) {
                        continue;
                    }
                    if !shown.contains(value.as_str()) {
                        continue;
                    }
                    let mut other = given.clone();
                    other[i].1 = "\u{1}".repeat(value.len());
                    let again = match rb.resolve_params(&other) {
                        Ok(_) => String::new(),
                        Err(e) => render(&e),
                    };
                    assert!(
                        again.contains(value.as_str()),
                        "the secret value of {name} is in the error: {shown}"
                    );
                }
            }
        }
    });
});

/// The error as a person sees it: the summary and every diagnostic rendered.
fn render(e: &runbook::Error) -> String {
    let mut out = e.to_string();
    if let runbook::Error::Script(diags) = e {
        for d in diags {
            out.push_str(&d.render(false));
        }
    }
    out
}
