//! Error kinds through the real binary: each kind exits with its own code and says what it is
//! about (a configuration error names its file first).

use crate::common;

use common::Workspace;

/// A hooks.toml that needs nothing from the environment, its guardrail state beside it.
const HOOKS: &str = "[server]\nstate = \"guardrails.json\"\n";

#[test]
fn a_broken_hooks_file_is_named_first_and_exits_with_invalid_input() {
    let ws = Workspace::new();
    ws.write("hooks.toml", "[server\nworkers = 2\n");
    let out = ws.run(&["hook", "--reset-breakers"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("hooks.toml: "),
        "the file is named: {}",
        out.stderr
    );
}

#[test]
fn an_unreadable_guardrail_state_is_an_internal_error_exiting_70_and_is_left_alone() {
    let ws = Workspace::new();
    ws.write("hooks.toml", HOOKS);
    ws.write("guardrails.json", "{\"breakers\": [truncated");
    let out = ws.run(&["hook", "--reset-breakers"]);
    out.expect_code(70);
    assert!(
        out.stderr.contains("guardrails.json")
            && out.stderr.contains("the guardrail state is unreadable"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ws.read("guardrails.json"),
        "{\"breakers\": [truncated",
        "kept for a person to look at"
    );
}

#[test]
fn an_address_already_taken_is_an_environment_error_exiting_69() {
    let ws = Workspace::new();
    ws.write("hooks.toml", HOOKS);
    // Held by this test for as long as the server tries to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = ws.run(&["serve", "--listen", &addr]);
    out.expect_code(69);
    assert!(
        out.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        out.stderr
    );
}
