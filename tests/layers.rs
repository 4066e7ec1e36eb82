//! The layers of `src/` and their one rule: a module imports only from its own layer or from
//! below (src/README.md, "Layers"). Read from the source text, so an import that climbs fails
//! here, naming the file and line, before any review has to spot it.

use std::path::Path;

/// One layer of the library: its folder under src/, its place (0 is the bottom), and the
/// modules it holds.
struct Layer {
    name: &'static str,
    rank: u8,
    members: &'static [&'static str],
}

/// The layers, lowest first: the one table the check reads. Each layer is the folder `src/<name>/`
/// and `crate::<name>::...` in a path; `members` are the modules in that folder, kept true by
/// `every_layer_folder_holds_exactly_the_modules_the_table_lists`.
const LAYERS: &[Layer] = &[
    Layer {
        name: "base",
        rank: 0,
        members: &[
            "clock",
            "console",
            "digest",
            "error",
            "git",
            "identity",
            "interrupt",
            "memory",
            "redact",
        ],
    },
    Layer {
        name: "data",
        rank: 1,
        members: &["config", "transcript"],
    },
    Layer {
        name: "services",
        rank: 2,
        members: &["approvals", "cloud", "notify", "runtime", "state"],
    },
    Layer {
        name: "sandbox",
        rank: 3,
        members: &["declare", "engine", "recorder"],
    },
    Layer {
        name: "bindings",
        rank: 4,
        members: &[
            "autoscaling",
            "cloudwatch",
            "core",
            "ec2",
            "elb",
            "health",
            "local",
            "slack",
            "ssm",
        ],
    },
    Layer {
        name: "runbook",
        rank: 5,
        members: &["catalog", "load", "markdown", "params", "validate"],
    },
    Layer {
        name: "run",
        rank: 6,
        members: &[
            "executor",
            "interactive",
            "launch",
            "lifecycle",
            "replay",
            "resume",
        ],
    },
    Layer {
        name: "front",
        rank: 7,
        members: &["capture", "cli", "docs", "drill", "hooks", "policy", "repl"],
    },
];

/// The layer of a top-level segment: the first segment of `crate::a::b`, or the first file or
/// folder under src/. `main.rs`, the binary, sits with the front-ends it calls.
fn layer_of(top: &str) -> Option<&'static Layer> {
    let top = if top == "main" { "front" } else { top };
    LAYERS.iter().find(|l| l.name == top)
}

#[test]
fn every_layer_folder_holds_exactly_the_modules_the_table_lists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for layer in LAYERS {
        let mut found: Vec<String> = std::fs::read_dir(src.join(layer.name))
            .unwrap_or_else(|e| panic!("src/{} should be a folder: {e}", layer.name))
            .map(|e| e.expect("a directory entry").path())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_string();
                if p.is_dir() {
                    Some(name)
                } else {
                    name.strip_suffix(".rs")
                        .filter(|n| *n != "mod")
                        .map(str::to_string)
                }
            })
            .collect();
        found.sort();
        let mut listed: Vec<&str> = layer.members.to_vec();
        listed.sort();
        assert_eq!(found, listed, "src/{}/ and LAYERS disagree", layer.name);
    }
    // Nothing but the crate root, the binary and the README beside the layer folders.
    let mut loose: Vec<String> = std::fs::read_dir(&src)
        .expect("src/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| !p.is_dir())
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    loose.sort();
    assert_eq!(loose, ["README.md", "lib.rs", "main.rs"]);
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files);
    assert!(
        files.len() > 20,
        "read only {} files under {}",
        files.len(),
        src.display()
    );
    let offences = offences(&files);
    assert!(
        offences.is_empty(),
        "imports that climb (a module imports only from its own layer or below, see src/README.md):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_catches_a_climbing_import_in_any_form() {
    let files = [
        (
            "sandbox/engine.rs".to_string(),
            [
                "//! Mentions crate::bindings in a comment, which is fine.",
                "use crate::{",
                "    base::clock::Clock,",
                "    runbook::{Runbook, load},",
                "};",
                "fn f() { let s = \"crate::front\"; crate::run::executor::run(); }",
                "/* crate::front::hooks */ use crate::sandbox::recorder::Mode;",
                "#[cfg(test)]",
                "mod tests {",
                "    use crate::front::cli::main;",
                "    fn g() { if true { crate::front::drill::x(); } }",
                "}",
                "use crate::somewhere_new::Thing;",
            ]
            .join("\n"),
        ),
        (
            "bindings/ec2.rs".to_string(),
            "use crate::services::cloud::Cloud;\n".to_string(),
        ),
        (
            "unplaced.rs".to_string(),
            "use crate::base::error::Error;\n".to_string(),
        ),
    ];
    assert_eq!(
        offences(&files),
        [
            "sandbox/engine.rs:4: sandbox (sandbox) imports runbook (runbook)",
            "sandbox/engine.rs:6: sandbox (sandbox) imports run (run)",
            "sandbox/engine.rs:13: sandbox (sandbox) imports somewhere_new, which is in no layer (add it to LAYERS in tests/layers.rs)",
            "unplaced.rs: unplaced is in no layer (add it to LAYERS in tests/layers.rs)",
        ]
    );
}

/// Every `.rs` file under `dir`, as (path relative to src/, text).
fn read_sources(src: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_sources(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src).expect("under src/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// Every import that climbs, and every module in no layer, as `file:line: ...`.
fn offences(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in files {
        // The crate root declares the modules; it belongs to no layer.
        if file == "lib.rs" {
            continue;
        }
        let top = file
            .split('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".rs");
        let Some(mine) = layer_of(top) else {
            out.push(format!(
                "{file}: {top} is in no layer (add it to LAYERS in tests/layers.rs)"
            ));
            continue;
        };
        let code = without_tests(&code_only(text));
        for (line, target) in crate_paths(&code) {
            if target == top {
                continue;
            }
            match layer_of(&target) {
                None => out.push(format!(
                    "{file}:{line}: {top} ({}) imports {target}, which is in no layer (add it to LAYERS in tests/layers.rs)",
                    mine.name
                )),
                Some(theirs) if theirs.rank > mine.rank => out.push(format!(
                    "{file}:{line}: {top} ({}) imports {target} ({})",
                    mine.name, theirs.name
                )),
                Some(_) => {}
            }
        }
    }
    out
}

/// The text with comments, string and character literals blanked (newlines kept, so line
/// numbers still count), leaving only code to search for paths.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && raw_prefix_starts(&chars, i)
        {
            // A raw string: r"...", r#"..."#, ...
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    out.push(blank(c));
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'', '\u{1F600}'), or a lifetime ('a), kept.
            let end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&j| chars[j] == '\'' && j > i + 2)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(chars[i..=end].iter().map(|&c| blank(c)));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` begins a raw string (`r"`, `br"`), not ends an identifier (`for"`).
fn raw_prefix_starts(chars: &[char], i: usize) -> bool {
    let before = |k: usize| i.checked_sub(k).map(|p| chars[p]);
    !ident_char(before(1)) || (before(1) == Some('b') && !ident_char(before(2)))
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The code with every `#[cfg(test)]` item blanked: a test module may reach anywhere.
fn without_tests(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut chars: Vec<char> = code.chars().collect();
    let text: String = chars.iter().collect();
    let starts: Vec<usize> = text
        .match_indices(ATTR)
        .map(|(byte, _)| text[..byte].chars().count())
        .collect();
    for start in starts.into_iter().rev() {
        // The item ends at its first `;` outside braces, or where its first `{` closes.
        let mut depth = 0usize;
        let mut end = chars.len();
        for (j, &c) in chars.iter().enumerate().skip(start + ATTR.chars().count()) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        for c in &mut chars[start..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    }
    chars.into_iter().collect()
}

/// Each `crate::x` the code names, as (1-based line, `x`), including each first segment of a
/// `use crate::{a, b::c, d::{e, f}}` group.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let line_at = |i: usize| 1 + chars[..i].iter().filter(|&&c| c == '\n').count();
    let ident_at = |mut j: usize| {
        while chars.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        let start = j;
        while ident_char(chars.get(j).copied()) {
            j += 1;
        }
        (start, chars[start..j].iter().collect::<String>())
    };
    let prefix: Vec<char> = "crate::".chars().collect();
    let mut i = 0;
    while i + prefix.len() <= chars.len() {
        if chars[i..i + prefix.len()] != prefix[..]
            || ident_char(i.checked_sub(1).map(|p| chars[p]))
        {
            i += 1;
            continue;
        }
        let mut j = i + prefix.len();
        while chars.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if chars.get(j) == Some(&'{') {
            // A group: the first identifier of each item at the group's own depth.
            let mut depth = 0usize;
            let mut expect_item = true;
            while j < chars.len() {
                match chars[j] {
                    '{' => {
                        depth += 1;
                        expect_item = depth == 1;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_item = true,
                    c if expect_item && depth == 1 && ident_char(Some(c)) => {
                        let (start, name) = ident_at(j);
                        if name != "self" {
                            found.push((line_at(start), name.clone()));
                        }
                        j = start + name.chars().count();
                        expect_item = false;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            let (start, name) = ident_at(j);
            if !name.is_empty() {
                found.push((line_at(start), name));
            }
            i = j.max(i + 1);
        }
    }
    found
}
