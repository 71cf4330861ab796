//! Helpers for unit tests elsewhere in the crate that need a command run
//! (say `git init` for a scratch repository): spawning stays in this folder.

use std::path::Path;

/// Runs `program` with `args` in `dir` and returns its stdout; fails the
/// test, with the command's stderr, when it cannot start or exits non-zero.
pub fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let out = match std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run {program} {args:?} in {}: {e}", dir.display()),
    };
    assert!(
        out.status.success(),
        "{program} {args:?} in {} failed ({}): {}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
