//! Who is acting, and which run: the identity a run, a decision, an approval request and an
//! answer are recorded under, and the id a new run gets.
//!
//! An identity is something established, never something typed: `os` is the local account the
//! kernel runs the process as (getuid and the password database, not `$USER`), `aws` the caller
//! ARN STS answers for the credentials in use, `slack` the user of a signed interaction.
//! `RUNBOOK_OPERATOR` only adds a display name, kept as `claimed`: it never makes one person two
//! (four-eyes and `approvers: N` count [`Who::key`]s, which ignore it).

use serde::{Deserialize, Serialize};

/// How an identity was established.
pub(crate) const VIA_OS: &str = "os";
pub(crate) const VIA_AWS: &str = "aws";
pub(crate) const VIA_SLACK: &str = "slack";

/// An identity and how it was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    /// `os`, `aws` or `slack`.
    pub via: String,
    /// `os`: `user@host`; `aws`: the caller ARN; `slack`: the user id (`T…/U…`).
    pub id: String,
    /// A name the source itself gave (the Slack user name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A display name nobody verified (`RUNBOOK_OPERATOR`, or an answer's own text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// The person this identity is known to be elsewhere (`[slack_users]` maps a Slack user to
    /// their ARN or local account, `via:id`): four-eyes and `approvers` count them as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
}

impl Who {
    /// The local account this process runs as, with `RUNBOOK_OPERATOR` as its claimed name.
    pub(crate) fn this_process() -> Who {
        let mut who = Who::os_account(current_uid());
        who.claimed = claimed_name();
        who
    }

    /// The local account `uid` on this host (`uid:N@host` when it has no name).
    pub(crate) fn os_account(uid: u32) -> Who {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let user = account_name(uid).unwrap_or_else(|| format!("uid:{uid}"));
        Who {
            via: VIA_OS.into(),
            id: format!("{user}@{host}"),
            name: None,
            claimed: None,
            same_as: None,
        }
    }

    /// An AWS caller, by the ARN STS returned for its credentials.
    pub(crate) fn aws(arn: &str) -> Who {
        Who {
            via: VIA_AWS.into(),
            id: arn.to_string(),
            name: None,
            claimed: None,
            same_as: None,
        }
    }

    /// A Slack user of a verified interaction.
    pub(crate) fn slack(team: &str, user: &str, name: Option<&str>) -> Who {
        Who {
            via: VIA_SLACK.into(),
            id: if team.is_empty() {
                user.to_string()
            } else {
                format!("{team}/{user}")
            },
            name: name.filter(|n| !n.is_empty()).map(str::to_string),
            claimed: None,
            same_as: None,
        }
    }

    /// The same identity with a claimed display name (ignored when blank).
    pub(crate) fn claiming(mut self, name: Option<String>) -> Who {
        self.claimed = name.filter(|n| !n.trim().is_empty());
        self
    }

    /// What tells two people apart: how and who (or who they are known to be), never the
    /// claimed name.
    pub(crate) fn key(&self) -> String {
        match &self.same_as {
            Some(other) => other.clone(),
            None => format!("{}:{}", self.via, self.id),
        }
    }

    /// Whether `self` is named in `group` (ARNs, Slack user ids, `user@host` or `os:user@host`
    /// keys): an entry matches the id, the Slack user id without its team, or the whole key.
    pub(crate) fn in_group(&self, group: &[String]) -> bool {
        let bare = self.id.rsplit('/').next().unwrap_or(&self.id);
        let own = format!("{}:{}", self.via, self.id);
        group.iter().any(|g| {
            *g == own
                || g == &self.id
                || self.same_as.as_deref() == Some(g.as_str())
                || (self.via == VIA_SLACK && g.as_str() == bare)
        })
    }

    /// As a person reads it: the established identity, and a claimed name marked as such.
    pub(crate) fn display(&self) -> String {
        let established = match (&self.name, self.via.as_str()) {
            (Some(n), _) => format!("{} {} ({n})", self.via, self.id),
            (None, VIA_OS) => self.id.clone(),
            (None, _) => format!("{} {}", self.via, self.id),
        };
        match &self.claimed {
            Some(c) if *c != self.id => format!("{c} (claimed; {established})"),
            _ => established,
        }
    }
}

/// `RUNBOOK_OPERATOR`, when set: a display name, never an identity.
fn claimed_name() -> Option<String> {
    std::env::var("RUNBOOK_OPERATOR")
        .ok()
        .filter(|op| !op.trim().is_empty())
}

/// The real uid of this process (from the kernel, whatever `$USER` says).
pub(crate) fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The account name of `uid` from the password file (None when it has no entry there: the
/// identity is then `uid:N@host`, still the account, only unnamed).
fn account_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Who is running this, as recorded in `operator` and `by`: this process's identity as a
/// person reads it (a claimed `RUNBOOK_OPERATOR` marked as claimed).
pub(crate) fn operator() -> String {
    Who::this_process().display()
}

/// A new run id: a ULID, so ids sort by start time and never collide.
pub(crate) fn new_run_id() -> String {
    ulid::Ulid::generate().to_string().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_name_never_makes_a_second_person() {
        let me = Who::os_account(current_uid());
        let claiming = me.clone().claiming(Some("someone-else".into()));
        assert_eq!(me.key(), claiming.key());
        assert!(claiming.display().starts_with("someone-else (claimed; "));
        assert!(claiming.display().contains(&me.id));
    }

    #[test]
    fn the_os_identity_is_the_account_not_the_user_variable() {
        // $USER is whatever the environment says; the kernel's uid is not.
        let who = Who::os_account(current_uid());
        assert_eq!(who.via, "os");
        assert!(!who.id.starts_with("uid:") || account_name(current_uid()).is_none());
    }

    #[test]
    fn a_group_names_arns_slack_ids_and_keys() {
        let arn = Who::aws("arn:aws:iam::123456789012:user/alice");
        assert!(arn.in_group(&["arn:aws:iam::123456789012:user/alice".into()]));
        assert!(!arn.in_group(&["alice".into()]));
        let s = Who::slack("T1", "U2", Some("bob"));
        assert!(s.in_group(&["U2".into()]));
        assert!(s.in_group(&["slack:T1/U2".into()]));
        assert!(!s.in_group(&["U3".into()]));
    }
}
