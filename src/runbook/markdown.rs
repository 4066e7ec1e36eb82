//! Markdown: a runbook's metadata, parameters and steps by phase, as `runbook show` prints them.

use super::{Confirm, Phase, Runbook, Step};

impl Runbook {
    /// Metadata and steps as Markdown (`runbook show`).
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let m = &self.meta;
        let mut out = format!("# {} (`{}@{}`)\n\n", m.title, m.id, m.version);
        if !m.description.is_empty() {
            let _ = writeln!(out, "{}\n", m.description);
        }
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| Severity | {} |", m.severity.as_str());
        let _ = writeln!(out, "| Alerts | {} |", m.alerts.join(", "));
        let _ = writeln!(out, "| Service | {} |", m.service);
        let _ = writeln!(out, "| Owner | {} |", m.owner);
        let _ = writeln!(
            out,
            "| Reviewed | {} |",
            m.reviewed
                .map(|d| d.to_string())
                .unwrap_or_else(|| "never".into())
        );
        let _ = writeln!(
            out,
            "| File | `{}` (sha256 `{}`) |",
            self.file,
            &self.sha256[..12]
        );
        if !m.params.is_empty() {
            let _ = writeln!(
                out,
                "\n## Parameters\n\n| Name | Type | Required | Default | Description |\n|---|---|---|---|---|"
            );
            for p in &m.params {
                let default = match (&p.default, p.secret) {
                    (_, true) => "(secret)".to_string(),
                    (Some(d), _) => format!("`{d}`"),
                    (None, _) => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} |",
                    p.name,
                    p.ty.as_str(),
                    if p.required { "yes" } else { "no" },
                    default,
                    p.description
                );
            }
        }
        for phase in Phase::ALL {
            let steps: Vec<&Step> = self.steps.iter().filter(|s| s.phase == phase).collect();
            if steps.is_empty() {
                continue;
            }
            let mut name = phase.as_str().to_string();
            name[..1].make_ascii_uppercase();
            let _ = writeln!(out, "\n## {name}\n");
            for s in steps {
                let mut flags = vec![format!("timeout {}", humantime::format_duration(s.timeout))];
                if s.retries > 0 {
                    flags.push(format!("{} retries", s.retries));
                }
                match &s.confirm {
                    Some(Confirm::Yes) => flags.push("needs confirmation".into()),
                    Some(Confirm::Word(w)) => flags.push(format!("type `{w}` to confirm")),
                    None => {}
                }
                if s.on_failure.is_some() {
                    flags.push("has rollback".into());
                }
                if s.allow_failure {
                    flags.push("may fail".into());
                }
                let _ = writeln!(
                    out,
                    "{}. **{}** ({})",
                    s.index + 1,
                    s.title,
                    flags.join(", ")
                );
                if !s.description.is_empty() {
                    let _ = writeln!(out, "   {}", s.description);
                }
            }
        }
        out
    }
}
