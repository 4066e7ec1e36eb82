//! Who is acting, and which run: the operator a run, an approval request and an answer are
//! recorded under, and the id a new run gets.

/// Who is running this: `RUNBOOK_OPERATOR`, or `user@host`.
pub(crate) fn operator() -> String {
    if let Ok(op) = std::env::var("RUNBOOK_OPERATOR")
        && !op.trim().is_empty()
    {
        return op;
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{host}")
}

/// A new run id: a ULID, so ids sort by start time and never collide.
pub(crate) fn new_run_id() -> String {
    ulid::Ulid::generate().to_string().to_lowercase()
}
