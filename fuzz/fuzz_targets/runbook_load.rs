//! The runbook loader and validator: source text -> `Runbook::load` (compile, the declaration
//! pass in the sandbox, validation of everything declared). Whatever the text, the loader must
//! return a runbook or diagnostics, never panic or hang.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use runbook::runbook::Runbook;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    // `runbook check` gives the declaration pass 10 s; an endless top-level loop would make
    // every such input cost that much, so the fuzzer stops it after 50 ms (the same interrupt).
    let path = common::runbook_path("fuzz-input.rhai");
    match Runbook::load_source(&path, source, common::host(), Duration::from_millis(50)) {
        Ok(rb) => {
            // What `runbook show` and `plan` do with a loaded runbook.
            let _ = rb.to_markdown();
            for w in &rb.warnings {
                let _ = w.render(false);
            }
            let _ = rb.resolve_params(&[]);
            for p in &rb.meta.params {
                let _ = rb.param(&p.name);
            }
        }
        Err(e) => {
            // The diagnostics are rendered for people (a caret under file:line:col): rendering
            // must not panic either, whatever position the error carries.
            if let runbook::Error::Script(diags) = &e {
                for d in diags {
                    let _ = d.render(false);
                }
            }
            let _ = e.to_string();
        }
    }
});
