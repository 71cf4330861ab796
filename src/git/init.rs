//! Making a new repository with a first commit, as `git init -b <branch>`,
//! `git config user.name/user.email`, `git add -A` and `git commit` would:
//! the demo's sample repo, made without the git CLI (only the process door
//! spawns).

use std::path::Path;

use anyhow::{Context, Result};
use git2::{Repository, RepositoryInitOptions};

use super::commit::commit_all;

/// Initialises a repository in `dir` whose first branch is `branch`, sets
/// its local `user.name` and `user.email`, and commits every file in `dir`
/// (honouring `.gitignore`) with `message`. Returns the commit id.
pub fn init_with_commit(
    dir: &Path,
    branch: &str,
    name: &str,
    email: &str,
    message: &str,
) -> Result<String> {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head(branch);
    let repo = Repository::init_opts(dir, &opts)
        .with_context(|| format!("making a git repository in {}", dir.display()))?;
    let mut config = repo
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .with_context(|| format!("opening the git config of {}", dir.display()))?;
    config
        .set_str("user.name", name)
        .and_then(|()| config.set_str("user.email", email))
        .with_context(|| format!("setting the commit identity in {}", dir.display()))?;
    drop(repo);
    commit_all(dir, message)?.with_context(|| format!("nothing to commit in {}", dir.display()))
}
