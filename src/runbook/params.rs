//! Parameters: `--param` text converted to typed values and checked against the declared specs
//! (types, durations, patterns, choices, secrets long enough to redact), never echoing a secret.

use rhai::{Dynamic, Map};

use super::{ParamSpec, ParamType, Runbook};
use crate::base::error::{Error, Result, ScriptDiagnostic};
use crate::base::redact::MIN_SECRET_LEN;

impl Runbook {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.meta.params.iter().find(|p| p.name == name)
    }

    /// Why `text`, given for parameter `name`, would be refused by [`Runbook::resolve_params`],
    /// if it would: for values fixed ahead of a run (a literal route parameter in hooks.toml,
    /// checked by `serve --check`). Never shows a secret value.
    pub(crate) fn param_text_problem(&self, name: &str, text: &str) -> Option<String> {
        let p = self.param(name)?;
        let why = match p.ty.convert(text) {
            Err(_) if p.secret => format!("the given value is not of type {}", p.ty.as_str()),
            Err(why) => why,
            Ok(value) => {
                let why = p.check_value(&value)?;
                if p.secret {
                    format!("the given value {why}")
                } else {
                    format!("{value:?} {why}")
                }
            }
        };
        Some(format!(
            "parameter {name}: {}",
            self.host.redactor.redact(&why)
        ))
    }

    fn param_diag(&self, p: &ParamSpec, message: String) -> ScriptDiagnostic {
        ScriptDiagnostic::new(
            &self.file,
            &self.source,
            p.line,
            p.col,
            message,
            "declared here",
        )
    }

    /// Checks and converts `--param k=v` values against the declared params: unknown names,
    /// missing required ones, wrong types, patterns and choices are all refused here, before
    /// any step. Secret values are handed to the redactor at once.
    /// The values of the parameters declared `target: true` in resolved `params`: what a run
    /// locks (see `state::Store::lock`).
    pub fn targets(&self, params: &Map) -> Vec<String> {
        self.meta
            .params
            .iter()
            .filter(|p| p.target)
            .filter_map(|p| params.get(p.name.as_str()))
            .filter(|v| !v.is_unit())
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn resolve_params(&self, given: &[(String, String)]) -> Result<Map> {
        let mut problems = Vec::new();
        let mut values = Map::new();
        let redactor = &self.host.redactor;
        refuse_nameless(given)?;
        // Every secret value given is known to the redactor before any problem is written: a
        // problem with another parameter may echo that parameter's value, and the secret may
        // be inside it (pasted into the wrong flag, or part of a longer string). Found by the
        // `resolve_params` fuzz target.
        for (name, value) in given {
            if self.param(name).is_some_and(|p| p.secret) {
                redactor.add_secret(value);
            }
        }
        for (name, _) in given {
            if self.param(name).is_none() {
                let known: Vec<&str> = self.meta.params.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "unknown parameter {:?} for runbook {}; it declares: {}",
                    redactor.redact(name),
                    self.meta.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        for p in &self.meta.params {
            let raw = given
                .iter()
                .rev()
                .find(|(n, _)| *n == p.name)
                .map(|(_, v)| v.as_str());
            let value = match raw {
                Some(text) => match p.ty.convert(text) {
                    Ok(v) => v,
                    Err(why) => {
                        // A secret's value is never shown, nor a credential-shaped one.
                        let why = if p.secret {
                            format!("the given value is not of type {}", p.ty.as_str())
                        } else {
                            redactor.redact(&why)
                        };
                        problems.push(self.param_diag(p, format!("parameter {}: {why}", p.name)));
                        continue;
                    }
                },
                None => match &p.default {
                    Some(d) => d.clone(),
                    None if p.required => {
                        problems.push(
                            self.param_diag(p, format!("missing required parameter {}", p.name))
                                .with_help(format!("pass it with --param {}=VALUE", p.name)),
                        );
                        continue;
                    }
                    None => Dynamic::UNIT,
                },
            };
            if let Some(why) = p.check_value(&value) {
                // Never echo a secret value in the error, nor a credential-shaped one.
                let shown = if p.secret {
                    "the given value".to_string()
                } else {
                    redactor.redact(&format!("{value:?}"))
                };
                problems.push(self.param_diag(p, format!("parameter {}: {shown} {why}", p.name)));
                continue;
            }
            if p.secret && !value.is_unit() {
                // Whatever its type, a secret is registered as the text it prints as.
                let text = value.to_string();
                if let Some(why) = secret_too_short(&text) {
                    problems.push(self.param_diag(p, format!("parameter {}: {why}", p.name)));
                    continue;
                }
                redactor.add_secret(&text);
            }
            values.insert(p.name.as_str().into(), value);
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(Error::Script(problems))
        }
    }
}

/// Why a secret cannot be accepted: one shorter than [`MIN_SECRET_LEN`] cannot be redacted
/// (searching for "ab" would destroy every record), so it is refused rather than left in clear.
/// An empty value is no secret (an optional secret left out), so it is accepted.
pub(super) fn secret_too_short(value: &str) -> Option<String> {
    (!value.is_empty() && value.chars().count() < MIN_SECRET_LEN).then(|| {
        format!(
            "a secret must be at least {MIN_SECRET_LEN} characters long so it can be redacted everywhere; the given value is shorter"
        )
    })
}

impl ParamSpec {
    /// Why `value` is not acceptable, if it is not.
    pub(super) fn check_value(&self, value: &Dynamic) -> Option<String> {
        if value.is_unit() {
            return None;
        }
        if !self.ty.accepts(value) {
            return Some(format!("is not of type {}", self.ty.as_str()));
        }
        if self.ty == ParamType::Duration
            && let Some(why) = duration_problem(value)
        {
            // The parser's detail may quote the value, which a secret must not show.
            return Some(if self.secret {
                "is not a duration such as \"30s\" or \"5m\" up to 366 days".to_string()
            } else {
                why
            });
        }
        if let Ok(s) = value.clone().into_string() {
            if let Some(re) = &self.pattern
                && !re.is_match(&s)
            {
                return Some(format!("does not match the pattern {}", re.as_str()));
            }
            if !self.choices.is_empty() && !self.choices.contains(&s) {
                return Some(format!("is not one of: {}", self.choices.join(", ")));
            }
        }
        None
    }
}

/// Why duration text would be refused by `sleep`, the waits and step options, if it would: a
/// `duration` parameter goes through the one duration parser ([`crate::base::clock::parse_duration`]),
/// so `check`, `--param` and `serve --check` accept exactly what `sleep(ctx.pause)` will, range
/// included. The parser's message starts with the value, which the callers show (or hide) already.
fn duration_problem(value: &Dynamic) -> Option<String> {
    let text = value.to_string();
    crate::base::clock::parse_duration(&text).err().map(|why| {
        why.strip_prefix(&format!("{text:?} "))
            .map_or_else(|| why.clone(), str::to_string)
    })
}

/// Refuses a `--param` given without its name (the command line keeps it nameless rather than
/// let clap quote it: the text may be a secret).
pub(crate) fn refuse_nameless(given: &[(String, String)]) -> Result<()> {
    if given.iter().any(|(name, _)| name.is_empty()) {
        return Err(Error::Usage(
            "a --param is not NAME=VALUE (its text is not repeated: it may be a secret)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::ParamType;

    #[test]
    fn a_duration_param_accepts_what_sleep_accepts_and_stays_text() {
        let spec = |secret| ParamSpec {
            name: "pause".into(),
            ty: ParamType::Duration,
            required: false,
            default: None,
            pattern: None,
            choices: Vec::new(),
            secret,
            target: false,
            description: String::new(),
            line: 1,
            col: 1,
        };
        let value = ParamType::Duration.convert("1m 30s").unwrap();
        assert_eq!(value.clone().into_string().unwrap(), "1m 30s");
        assert_eq!(spec(false).check_value(&value), None);
        let bad = ParamType::Duration.convert("banana").unwrap();
        let why = spec(false).check_value(&bad).unwrap();
        assert!(why.starts_with("is not a duration such as"), "{why}");
        let long = Dynamic::from("400d".to_string());
        let why = spec(false).check_value(&long).unwrap();
        assert!(why.starts_with("is longer than the maximum"), "{why}");
        // Nothing of a secret's value, nor the parser's detail about it, is shown.
        let secret = Dynamic::from("banana-s3cret".to_string());
        let why = spec(true).check_value(&secret).unwrap();
        assert!(
            !why.contains("s3cret") && !why.contains("expected"),
            "{why}"
        );
        assert!(spec(false).check_value(&Dynamic::from(30_i64)).is_some());
    }

    #[test]
    fn a_secret_inside_another_parameter_s_value_is_redacted_from_its_error() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        let dir = tempfile::tempdir().unwrap();
        let src = r#"runbook(#{
    id: "p", version: "1.0.0", title: "t", severity: "P3",
    description: "d", service: "s", owner: "o", reviewed: "2026-01-01", alerts: ["a"],
    params: #{
        ratio: #{ type: "float" },
        token: #{ type: "string", secret: true },
    },
});
containment("c", |ctx| {});
"#;
        let host = crate::sandbox::engine::Host::new(
            crate::sandbox::recorder::Mode::Plan,
            crate::base::console::Console::silent(),
            Arc::new(AtomicBool::new(false)),
        );
        let rb = Runbook::load_source(
            &dir.path().join("p.rhai"),
            src,
            host,
            std::time::Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // `ratio` is declared (and checked) before `token`, and its error echoes its value,
        // which holds the token (found by the resolve_params fuzz target).
        let given = [
            ("ratio".to_string(), "tekons3cmtorplode".to_string()),
            ("token".to_string(), "s3cmtorp".to_string()),
        ];
        let err = rb.resolve_params(&given).unwrap_err().to_string();
        assert!(err.contains("parameter ratio"), "{err}");
        assert!(
            !err.contains("s3cmtorp"),
            "the secret is in the error: {err}"
        );
    }

    #[test]
    fn params_convert_from_text() {
        assert_eq!(ParamType::Int.convert("42").unwrap().as_int().unwrap(), 42);
        assert!(ParamType::Int.convert("4x").is_err());
        assert!(ParamType::Bool.convert("yes").unwrap().as_bool().unwrap());
        assert!(ParamType::Bool.convert("maybe").is_err());
    }
}
