//! `tracer generate DIR` (hidden): the man pages and shell completions the
//! package ships, from the clap definitions.

use anyhow::Result;

/// The man pages (tracer.1, tracer-record.1, ...) and completions
/// (tracer.bash, _tracer, tracer.fish), from the definitions above so that
/// they cannot drift from them.
pub fn generate(dir: &std::path::Path) -> Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = crate::cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), dir)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "tracer", dir)?;
    }
    Ok(())
}
