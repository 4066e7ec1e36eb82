//! The hooks.toml parser and checks (`hooks::config::Hooks::load`), then what the receiver does
//! with a loaded file for an alert: route it, fill the route's parameter and target templates
//! (`{labels.X}`, `{labels.X|default}`, `{annotations.X}`, `{alert.name}`), resolve its paths.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runbook::front::hooks::config::{self, Hooks};
use runbook::front::hooks::{Alert, Source};

fn alert(name: &str, source: Source) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("alertname", name),
        ("instance_id", "i-0a1b2c3d4e5f60718"),
        ("severity", "P2"),
        ("service", "{labels.instance_id}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations = [("summary".to_string(), "CPU above 85%".to_string())].into();
    Alert {
        source,
        name: name.to_string(),
        firing: true,
        fingerprint: Alert::fingerprint_of(source, name, &labels),
        labels,
        annotations,
        starts_at: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hooks) = Hooks::from_text(text, Path::new("fuzz/hooks.toml")) else {
        return;
    };
    let _ = (hooks.transcripts(), hooks.state_path(), hooks.kill_switch());
    for route in &hooks.file.routes {
        for source in [Source::Alertmanager, Source::Sns, Source::Generic] {
            let a = alert(&route.alert, source);
            let _ = route.matches(&a);
            let _ = hooks.route(&a);
            if let Ok(params) = route.params_for(&a) {
                assert_eq!(params.len(), route.params.len());
            }
            let _ = route.target_for(&a);
            let _ = route.runbook_id();
        }
        for template in route.params.values() {
            let _ = config::fill(template, &alert("x", Source::Generic));
        }
    }
});
