//! The agent-command preflight: does each stream's `[agent] command`
//! resolve to an executable? Asked where a run starts, not when the swarm
//! file is loaded, so `loki status`, `loki show` or `loki check` work
//! without the agent installed, and a rehearsal (which uses loki's stand-in)
//! never asks.

use std::path::Path;

use super::{AgentSettings, ConfigError, SwarmFile};

/// Why `agent.command` would not start, and how to fix it; `None` when it
/// resolves. Resolved as a run resolves it
/// ([`crate::process::resolve_command`]): a command with a `/` is a path,
/// relative to the repository root `repo_root`, that must be an executable
/// file; a bare name must be an executable on PATH (the stream's `env`
/// PATH when it sets one, as the spawned process would use).
pub fn agent_command_problem(repo_root: &Path, agent: &AgentSettings) -> Option<(String, String)> {
    let c = &agent.command;
    let claude_fix = "install Claude Code: npm install -g @anthropic-ai/claude-code (or set \
                      `command` to the path of your claude)";
    if c.contains('/') {
        let resolved = crate::process::resolve_command(repo_root, c);
        if crate::process::find_executable(&resolved).is_some() {
            return None;
        }
        let p = Path::new(&resolved);
        let why = if !p.exists() {
            "does not exist"
        } else if p.is_dir() {
            "is a folder"
        } else {
            "is not executable"
        };
        let shown = if resolved == *c {
            String::new()
        } else {
            format!(" ({resolved})")
        };
        let help = if why == "is not executable" {
            format!("make it executable: chmod +x {resolved}")
        } else if agent.is_claude() {
            claude_fix.to_string()
        } else {
            format!(
                "put the agent there, or give its right path (absolute, or relative to the \
                 repository root {})",
                repo_root.display()
            )
        };
        return Some((format!("agent command `{c}` {why}{shown}"), help));
    }
    let (found, whose) = match agent.env.get("PATH") {
        Some(path) => (
            std::env::split_paths(path)
                .filter(|d| !d.as_os_str().is_empty())
                .any(|d| crate::process::find_executable(&d.join(c).to_string_lossy()).is_some()),
            "the PATH set in the agent's `env`",
        ),
        None => (crate::process::find_executable(c).is_some(), "PATH"),
    };
    if found {
        return None;
    }
    let help = if agent.is_claude() {
        claude_fix.to_string()
    } else {
        format!("put `{c}` on PATH or give its path (absolute, or relative to the repository root)")
    };
    Some((
        format!("agent command `{c}` is not an executable on {whose}"),
        help,
    ))
}

/// Refuses the first stream whose agent command does not resolve (see
/// [`agent_command_problem`]), at the `command` key that set it (or
/// `[agent]`, or the stream, when it is the default `claude`).
///
/// Not part of [`super::load`]: `loki run --rehearse` replaces the agent with
/// loki's stand-in, and `loki status` or `loki check` never start one. `loki
/// run` calls it before it creates anything.
pub fn check_agent_commands(cfg: &SwarmFile, repo_root: &Path) -> Result<(), ConfigError> {
    for (i, s) in cfg.streams.iter().enumerate() {
        let Some((message, help)) = agent_command_problem(repo_root, &s.agent) else {
            continue;
        };
        let (line, col) = cfg.command_at.get(i).copied().unwrap_or((0, 0));
        return Err(ConfigError {
            file: cfg.path.clone(),
            line,
            col,
            message: format!("stream `{}`: {message}", s.id),
            help,
        });
    }
    // A validator a stream names must start too: it would fail the stream
    // hours into the night otherwise.
    let used = cfg
        .streams
        .iter()
        .map(|s| &s.checks)
        .chain(cfg.templates.iter().map(|t| &t.stream.checks))
        .flat_map(|c| c.validators.iter());
    for name in used {
        let Some(v) = cfg.validators.get(name) else {
            continue;
        };
        let Some((message, help)) = agent_command_problem(repo_root, &v.agent) else {
            continue;
        };
        return Err(ConfigError {
            file: cfg.path.clone(),
            line: v.at.0,
            col: v.at.1,
            message: format!("validator `{name}`: {message}"),
            help,
        });
    }
    Ok(())
}
