//! `runbook man`: the manual pages, generated from the clap definitions (clap_mangen), so the
//! page and `--help` can never disagree. The Debian package (`.ci/deb`) installs what
//! `runbook man --dir` writes; the command is hidden because only packagers need it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::args::Cli;
use crate::base::error::{Error, Result};

/// Without `dir`: `runbook(1)` on stdout. With it: `runbook.1` and one page per visible
/// subcommand (`runbook-serve.1`, `runbook-transcript-verify.1`, ...) written there, their paths
/// printed one a line.
pub(super) fn man(dir: Option<&Path>) -> Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Fills in the display names (`runbook-transcript-verify`) the file names come from.
    cmd.build();
    let Some(dir) = dir else {
        let stdout = Path::new("<stdout>");
        let mut page = Vec::new();
        page_of(&cmd)
            .render(&mut page)
            .map_err(|e| Error::io("cannot render the manual page for", stdout, e))?;
        return std::io::stdout()
            .write_all(&page)
            .map_err(|e| Error::io("cannot write", stdout, e));
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = page_of(cmd);
    let path = man
        .generate_to(dir)
        .map_err(|e| Error::io("cannot write", &dir.join(man.get_filename()), e))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

fn page_of(cmd: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone()).manual("runbook manual")
}
