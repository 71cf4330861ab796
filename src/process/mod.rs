//! The only place that spawns, signals or reaps a process: agents, check
//! commands, version probes. Every child gets its own
//! process group, the parent-death signal and a record that lets a later
//! supervisor sweep what is left of it; agents and check commands also run
//! under the keeper (`loki __keep`), a subreaper that ends everything they
//! leave, the supervisor's death included.
//!
//! | file | owns |
//! | --- | --- |
//! | `spawn` | building a contained child (`contained`), the long-lived [`Spawner`] thread |
//! | `keep` | the keeper every agent and check command runs under: a subreaper that ends all it left ([`keep`]) |
//! | `run` | one async child to its end: pipes, logs, timeouts, stop requests ([`run_job`]) |
//! | `capture` | one child run synchronously with its output tail ([`run_captured`]), or quietly ([`run_quiet`]) |
//! | `group` | ending a group (SIGTERM, grace, SIGKILL, reap) and [`sweep_leftover`] |
//! | `proc` | `/proc`: start times, boot hash, tokens, [`group_members`] |
//! | `probe` | `--version` probes |
//!
//! Nothing here knows what it runs: what an agent's output means is
//! `agent`'s, what a check's exit code means is `checks`'.

mod capture;
mod group;
mod keep;
mod probe;
mod proc;
mod run;
mod spawn;

pub use capture::{
    run_captured, run_quiet, Capture, CaptureStartError, Captured, Exit, OnStart, Ran,
};
pub use group::sweep_leftover;
pub use keep::{keep, KEEP_SUBCOMMAND};
pub use probe::{agent_version, query_version};
pub use proc::{
    boot_hash, group_members, is_alive, leftover_members, own_start_time, proc_start_time,
    TOKEN_ENV,
};
pub use run::{run_job, End, Finished, Job, Output, StartError};
pub use spawn::{use_keeper, Spawner};

#[cfg(test)]
pub mod test_support;

use std::path::Path;

/// A command with a slash is a path (relative to the repo root); otherwise
/// it is looked up on PATH by the OS.
pub fn resolve_command(root: &Path, command: &str) -> String {
    if command.contains('/') && !Path::new(command).is_absolute() {
        root.join(command).display().to_string()
    } else {
        command.to_string()
    }
}

/// Where `command` is found: itself when it names a path, else the first
/// executable of that name on `PATH`. `None` when there is none.
pub fn find_executable(command: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = std::path::PathBuf::from(command);
        return runnable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| runnable(p))
}
