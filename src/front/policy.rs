//! `runbook check --policy`: the Deployment and Operations Manual's runbook mandate, checked.
//!
//! "A comprehensive runbook must exist for every High and Critical severity alert defined in the
//! monitoring system, detailing the step-by-step containment, eradication, and recovery
//! procedures. These runbooks must be reviewed and tested quarterly." So: every P1/P2 alert in
//! `alerts.toml` is answered by a runbook with all three phases; every runbook was reviewed within
//! 90 days and passed a drill within 90 days; and a runbook's version changes whenever its content
//! does (a drill record of the same version with another content hash is a violation).

use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::base::error::{Error, Result};
use crate::front::drill::Record;
use crate::runbook::Runbook;
use crate::sandbox::declare::{Phase, Severity};

/// The mandate's "quarterly".
pub(crate) const MAX_AGE_DAYS: i64 = 90;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Catalogue {
    #[serde(rename = "alert")]
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Alert {
    pub name: String,
    pub severity: String,
    pub condition: String,
    /// Where the seed documents define the alert; read so the catalogue may carry it
    /// (`deny_unknown_fields`), not used by any check yet.
    #[serde(default)]
    #[allow(dead_code)]
    pub source: String,
}

pub(crate) fn load_catalogue(path: &Path) -> Result<Catalogue> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("cannot read alert catalogue", path, e))?;
    let c: Catalogue = toml::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?;
    for a in &c.alerts {
        if Severity::parse(&a.severity).is_none() {
            return Err(Error::config(
                path,
                format!("alert {} has severity {:?}, not P1..P4", a.name, a.severity),
            ));
        }
    }
    Ok(c)
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Violation {
    pub rule: &'static str,
    pub subject: String,
    pub message: String,
}

/// Checks the rules on loaded runbooks, the catalogue and the drill records, as of `now`.
pub(crate) fn check(
    runbooks: &[Runbook],
    catalogue: &Catalogue,
    records: &[Record],
    now: NaiveDate,
) -> Vec<Violation> {
    let mut v = Vec::new();
    for alert in &catalogue.alerts {
        let sev = Severity::parse(&alert.severity).unwrap_or(Severity::P4);
        if sev > Severity::P2 {
            continue;
        }
        let answering: Vec<&Runbook> = runbooks
            .iter()
            .filter(|r| r.meta.alerts.contains(&alert.name))
            .collect();
        if answering.is_empty() {
            v.push(Violation {
                rule: "runbook-for-alert",
                subject: alert.name.clone(),
                message: format!(
                    "{} alert {:?} ({}) has no runbook naming it in `alerts`",
                    alert.severity, alert.name, alert.condition
                ),
            });
        }
        for r in answering {
            let missing: Vec<&str> = Phase::ALL
                .iter()
                .filter(|p| !r.steps.iter().any(|s| s.phase == **p))
                .map(|p| p.as_str())
                .collect();
            if !missing.is_empty() {
                v.push(Violation {
                    rule: "three-phases",
                    subject: r.meta.id.clone(),
                    message: format!(
                        "answers {} alert {:?} but has no {} step",
                        alert.severity,
                        alert.name,
                        missing.join(" or ")
                    ),
                });
            }
        }
    }
    for r in runbooks {
        let id = &r.meta.id;
        match r.meta.reviewed {
            None => v.push(Violation {
                rule: "reviewed",
                subject: id.clone(),
                message: "never reviewed (no `reviewed` date)".into(),
            }),
            Some(d) if (now - d).num_days() > MAX_AGE_DAYS => v.push(Violation {
                rule: "reviewed",
                subject: id.clone(),
                message: format!(
                    "last reviewed {d}, {} days ago (at most {MAX_AGE_DAYS})",
                    (now - d).num_days()
                ),
            }),
            Some(_) => {}
        }
        let version = r.meta.version.to_string();
        let mine: Vec<&Record> = records.iter().filter(|x| &x.runbook == id).collect();
        for rec in mine
            .iter()
            .filter(|x| x.version == version && x.sha256 != r.sha256)
        {
            v.push(Violation {
                rule: "version-bump",
                subject: id.clone(),
                message: format!(
                    "content changed since the drill of {} ({}) but the version is still {version}: bump it",
                    rec.date, rec.scenario
                ),
            });
        }
        let fresh = mine
            .iter()
            .filter(|x| x.sha256 == r.sha256)
            .filter_map(|x| NaiveDate::parse_from_str(&x.date, "%Y-%m-%d").ok())
            .max();
        match fresh {
            None => v.push(Violation {
                rule: "drilled",
                subject: id.clone(),
                message: format!(
                    "no passing drill of this content (version {version}): run `runbook drill {id}`"
                ),
            }),
            Some(d) if (now - d).num_days() > MAX_AGE_DAYS => v.push(Violation {
                rule: "drilled",
                subject: id.clone(),
                message: format!(
                    "last passing drill {d}, {} days ago (at most {MAX_AGE_DAYS})",
                    (now - d).num_days()
                ),
            }),
            Some(_) => {}
        }
    }
    v
}
