//! The Alertmanager webhook payload parser (`hooks::alertmanager::parse`): any request body gives
//! alerts or a 400, never a panic; every alert it gives is named by its `alertname` label.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runbook::front::hooks::{Rejection, alertmanager};

fuzz_target!(|data: &[u8]| {
    match alertmanager::parse(data) {
        Ok(alerts) => {
            for a in alerts {
                assert_eq!(a.labels.get("alertname"), Some(&a.name));
                let _ = serde_json::to_string(&a);
            }
        }
        Err(r) => {
            assert!(matches!(r, Rejection::Malformed(_)), "{r}");
            assert_eq!(r.status(), 400);
        }
    }
});
