//! The command line: clap definitions, and the glue that turns arguments
//! into calls. No decisions live here.

pub mod clean;
pub mod demo;
pub mod import;
pub mod init;
pub mod log;
pub mod logs;
pub mod remote;
pub mod serve;
pub mod show;
pub mod steer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::SwarmFile;
use crate::error::{Error, ErrorKind};
use crate::model::Kind;
use crate::model::{Status, StreamState};
use crate::store::{StateStore, StoreError};
use steer::Request;

#[derive(Debug, Parser)]
#[command(
    name = "loki",
    version,
    about = "A git-native worktree swarm runner: one branch, one worktree and one agent per stream, merged back automatically"
)]
pub struct Cli {
    /// The swarm file (default: loki.toml at the repo root).
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write an example loki.toml, prompt templates and .loki/.gitignore into this repo.
    Init,
    /// Run the swarm: every stream in its own worktree, checked, merged in dependency order.
    Run {
        /// Plain timestamped lines instead of live bars.
        #[arg(long)]
        plain: bool,
        /// Rehearse with a built-in stand-in agent on a scratch branch (no tokens).
        #[arg(long)]
        rehearse: bool,
        /// With --rehearse: keep the scratch branch.
        #[arg(long, requires = "rehearse")]
        keep: bool,
        /// Stay up until every stream is merged or cancelled, acting on
        /// approvals, rejections, retries and cancels as they arrive.
        #[arg(long)]
        wait: bool,
        /// Run failed streams again even when nothing they read changed
        /// since they failed.
        #[arg(long)]
        retry_failed: bool,
        /// Also serve the web dashboard on 127.0.0.1 (port 7411 unless
        /// given: --serve=8080) while the run lasts.
        #[arg(long, value_name = "PORT", num_args = 0..=1, require_equals = true, default_missing_value = "7411")]
        serve: Option<u16>,
        /// Share the swarm with other supervisors through this git remote
        /// (overrides `[swarm] remote`): streams are claimed on it, progress
        /// and merges are pushed to it.
        #[arg(long, value_name = "NAME", conflicts_with = "rehearse")]
        remote: Option<String>,
    },
    /// Serve the web dashboard: the graph, every stream's progress and
    /// reports, and approvals from a browser.
    Serve {
        /// The address to listen on (a non-loopback one needs the token for every request).
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        #[arg(long, default_value_t = serve::DEFAULT_PORT)]
        port: u16,
    },
    /// Write a swarm file from a workflow config ({"steps": {...}}).
    Import {
        /// The workflow config (JSON).
        file: PathBuf,
        /// Where to write the swarm file (default: loki.toml at the repo root).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Show every stream: status, attempts, duration, cost, branch.
    Status {
        /// Machine-readable JSON with a top-level `streams` array.
        #[arg(long)]
        json: bool,
        /// Refresh in place every second until Ctrl-C.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        /// The whole swarm across machines, from the remote's refs alone:
        /// who holds what, since when, and the health of each lease (the
        /// remote: this name, else `[swarm] remote`).
        #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = false, default_missing_value = "", conflicts_with = "watch")]
        remote: Option<String>,
    },
    /// An attempt's transcript, rendered for a person.
    Logs {
        id: String,
        /// Which attempt (default: the latest).
        #[arg(long, short = 'a')]
        attempt: Option<u32>,
        /// Keep printing while the attempt runs.
        #[arg(long, short = 'f')]
        follow: bool,
        /// The raw JSON lines.
        #[arg(long)]
        raw: bool,
    },
    /// What a reviewer needs: outputs with word counts, the check report, the diff, the agent's final message.
    Show { id: String },
    /// Run a stream's checks on its worktree now, without an agent (after fixing a draft by hand).
    Check { id: Option<String> },
    /// The audit trail read back from git alone: attempts, checks, costs, approvals.
    Log {
        id: Option<String>,
        #[arg(long)]
        json: bool,
        /// Read this branch instead of the swarm's target (e.g. a kept `loki-rehearsal/…` branch).
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
    },
    /// Remove worktrees, branches and run files of merged, cancelled, failed and blocked streams.
    Clean {
        /// Also conflicted, interrupted, pending, retrying and awaiting-approval streams.
        #[arg(long)]
        all: bool,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check git, the agent, credentials, inotify limits, disk and the swarm file.
    Doctor,
    /// A sample six-chapter book in a temporary repo, run with the stand-in agent.
    Demo {
        /// Plain lines instead of live bars.
        #[arg(long)]
        plain: bool,
        /// Create the demo repo under this folder (default: the system's temp folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Approve a stream awaiting approval: it merges.
    Approve {
        id: String,
        /// Who approves (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject a stream awaiting approval: another attempt with your note as feedback.
    Reject {
        id: String,
        #[arg(long, short = 'n')]
        note: String,
        /// Count the rejected attempt against max_attempts.
        #[arg(long)]
        count: bool,
    },
    /// Cancel a stream (its agent is stopped; worktree and branch are kept).
    Cancel { id: String },
    /// Run a failed, blocked, cancelled, interrupted or conflicted stream again.
    Retry { id: String },
    /// Start no new attempts until `loki resume` (running ones go on).
    Pause,
    /// Undo `loki pause`.
    Resume,
    /// Send any signal, as agents and scripts do.
    Signal {
        /// MERGE_REQUESTED, FEATURE_READY, TESTS_PASSED, TESTS_FAILED, APPROVE, REJECT, CANCEL, RETRY, PAUSE, RESUME, STOP.
        kind: String,
        id: Option<String>,
        /// Apply only if the stream is still at this state version.
        #[arg(long = "expect-version", value_name = "N")]
        expect_version: Option<u64>,
        #[arg(long)]
        note: Option<String>,
    },
    /// The built-in stand-in agent used by `loki run --rehearse`.
    #[command(hide = true, name = "stand-in")]
    StandIn,
    /// The keeper every agent and check command runs under (see
    /// `process::keep`); started by loki itself, never by a person.
    #[command(hide = true, name = "__keep")]
    Keep {
        /// Between SIGTERM and SIGKILL for what the program leaves.
        #[arg(long, default_value_t = 10_000)]
        grace_ms: u64,
        /// The pipe on which a failed start is reported.
        #[arg(long)]
        report_fd: Option<i32>,
        /// The supervisor: the keeper arms its own death signal and stops
        /// if its parent is another process already.
        #[arg(long)]
        parent_pid: Option<i32>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

impl Command {
    /// `loki __keep`: runs without the async runtime, as the process
    /// module's keeper. `None` for every other command.
    pub fn keeper(&self) -> Option<i32> {
        let Command::Keep {
            grace_ms,
            report_fd,
            parent_pid,
            command,
        } = self
        else {
            return None;
        };
        let (program, args) = command.split_first()?;
        Some(crate::process::keep(
            std::time::Duration::from_millis(*grace_ms),
            *report_fd,
            *parent_pid,
            program,
            args,
        ))
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn main(cli: Cli) -> Result<i32> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    match cli.command {
        Command::Import { file, output } => {
            let output = match output {
                Some(o) => o,
                None => crate::commands::import::default_output(&cwd)?,
            };
            let c = crate::commands::import::import(&file, &output)?;
            println!(
                "wrote {} with {} stream(s) from {}",
                output.display(),
                c.streams,
                file.display()
            );
            for u in &c.unmapped {
                println!("  not mapped: {u}");
            }
            match crate::config::load(&output) {
                Ok(cfg) => println!(
                    "{} loads: {} stream(s); try it with `loki run --rehearse`",
                    output.display(),
                    cfg.streams.len()
                ),
                Err(e) => println!("{} does not load yet:\n{e}", output.display()),
            }
            Ok(0)
        }
        Command::Init => {
            let r = crate::commands::init::init(&cwd)?;
            println!(
                "loki init in {} (target branch {})",
                r.root.display(),
                r.target
            );
            for w in &r.written {
                println!("  wrote {w}");
            }
            for k in &r.kept {
                println!("  kept your {k}");
            }
            println!("next: edit loki.toml and prompts/, commit them, then `loki run --rehearse` and `loki run`");
            Ok(0)
        }
        Command::Run {
            plain,
            rehearse,
            keep,
            wait,
            retry_failed,
            serve,
            remote,
        } => {
            let config = config_path(cli.config.clone(), &cwd)?;
            // The dashboard lives as long as the run, in the same process.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let server = match serve {
                Some(port) => {
                    let opts = serve::ServeOptions {
                        config: cli.config.clone(),
                        cwd: cwd.clone(),
                        bind: std::net::IpAddr::from([127, 0, 0, 1]),
                        port,
                    };
                    Some(tokio::spawn(serve::serve(opts, Some(stop_rx))))
                }
                None => None,
            };
            let code = crate::supervisor::run(crate::supervisor::RunOptions {
                config,
                ui: crate::ui::Mode::detect(plain),
                rehearse,
                keep,
                stand_in: false,
                stand_in_delay_ms: 0,
                wait,
                retry_failed,
                remote,
            })
            .await;
            let _ = stop_tx.send(true);
            if let Some(h) = server {
                if let Ok(Err(e)) = h.await {
                    eprint!("{}", crate::error::render(&e));
                }
            }
            code
        }
        Command::Serve { bind, port } => {
            let opts = serve::ServeOptions {
                config: cli.config,
                cwd,
                bind,
                port,
            };
            serve::serve(opts, None).await
        }
        Command::Status {
            json,
            watch,
            remote,
        } => {
            if let Some(name) = remote {
                return remote::status(cli.config, &cwd, &name, json);
            }
            if !watch {
                return status(cli.config, &cwd, json);
            }
            // Refreshing in place needs a terminal; into a pipe or a file
            // each refresh is a new table after a blank line, with no
            // escape codes.
            use std::io::{IsTerminal, Write};
            let terminal = std::io::stdout().is_terminal();
            let mut first = true;
            loop {
                let text = status_text(cli.config.clone(), &cwd)?;
                if terminal {
                    print!("\x1b[2J\x1b[H{text}");
                } else {
                    print!("{}{text}", if first { "" } else { "\n" });
                }
                first = false;
                let _ = std::io::stdout().flush();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(0),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
        Command::Logs {
            id,
            attempt,
            follow,
            raw,
        } => {
            let root = repo_root(&cwd)?;
            crate::commands::logs::logs(&root, &id, attempt, follow, raw)
        }
        Command::Doctor => crate::commands::logs::doctor(&cwd, cli.config.as_deref()),
        Command::Keep { .. } => Ok(cli.command.keeper().unwrap_or(2)),
        Command::Show { id } => {
            let (cfg, root, target) = load_config(cli.config, &cwd)?;
            crate::commands::show::show(&root, &cfg, &target, &id)
        }
        Command::Check { id } => {
            let (cfg, root, _) = load_config(cli.config, &cwd)?;
            crate::commands::show::check(&root, &cfg, id.as_deref())
        }
        Command::Log { id, json, branch } => {
            let root = repo_root(&cwd)?;
            let target = match branch {
                Some(b) => b,
                None => log_target(cli.config, &cwd, &root)?,
            };
            crate::commands::log::run(&root, &target, id.as_deref(), json)
        }
        Command::Clean { all, dry_run } => {
            let root = repo_root(&cwd)?;
            crate::commands::clean::run(&root, all, dry_run)
        }
        Command::Demo { plain, dir } => crate::commands::demo::run(plain, dir.as_deref()).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Generated into memory first: clap_complete panics on a closed pipe.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "loki", &mut buf);
            use std::io::Write;
            let _ = std::io::stdout().write_all(&buf);
            Ok(0)
        }
        Command::Approve { id, by } => {
            steer(cli.config, &cwd, Kind::Approve, Some(id), None, by, false)
        }
        Command::Reject { id, note, count } => steer(
            cli.config,
            &cwd,
            Kind::Reject,
            Some(id),
            None,
            Some(note),
            count,
        ),
        Command::Cancel { id } => {
            steer(cli.config, &cwd, Kind::Cancel, Some(id), None, None, false)
        }
        Command::Retry { id } => steer(cli.config, &cwd, Kind::Retry, Some(id), None, None, false),
        Command::Pause => steer(cli.config, &cwd, Kind::Pause, None, None, None, false),
        Command::Resume => steer(cli.config, &cwd, Kind::Resume, None, None, None, false),
        Command::Signal {
            kind,
            id,
            expect_version,
            note,
        } => {
            let k = Kind::parse(&kind).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                Error::refusal(format!("unknown signal kind `{kind}`"))
                    .hint(format!("one of {}", known.join(", ")))
            })?;
            // Agents inside a worktree reach the main repo through LOKI_SIGNALS_DIR.
            if let Ok(dir) = std::env::var("LOKI_SIGNALS_DIR") {
                if cli.config.is_none() {
                    let d = crate::signal_files::SignalDir::new(&dir);
                    let p = d.write(k, id.as_deref(), expect_version, note.as_deref(), false)?;
                    println!("wrote {}", p.display());
                    return Ok(0);
                }
            }
            steer(cli.config, &cwd, k, id, expect_version, note, false)
        }
        Command::StandIn => crate::agent::standin::main(),
    }
}

/// The branch `loki log` reads without `--branch`: the swarm's target, or
/// the current branch when loki.toml names none. `loki log` works without a
/// swarm file (a fresh clone), but reading another branch than the user
/// meant would be silent, so a swarm file that fails to load is a warning
/// naming the branch read instead.
fn log_target(config: Option<PathBuf>, cwd: &Path, root: &Path) -> Result<String> {
    let path = config_path(config, cwd)?;
    let target = match crate::config::load(&path) {
        Ok(cfg) => cfg.swarm.target.clone(),
        Err(e) => {
            let current = current_or_main(root)?;
            eprintln!(
                "warning: reading branch {current} (the current branch): the swarm file did not load, so its target is unknown\n  {e}\n  help: `loki log --branch <name>` reads another branch"
            );
            return Ok(current);
        }
    };
    match target {
        Some(t) => Ok(t),
        None => current_or_main(root),
    }
}

/// The current branch, or `main` on a detached head.
fn current_or_main(root: &Path) -> Result<String> {
    Ok(crate::git::current_branch(root)?.unwrap_or_else(|| "main".into()))
}

/// The root of the repository around `dir`; not finding one is the
/// environment's fault (no repository, no commit yet), not the user's input.
pub(crate) fn repo_root(dir: &Path) -> Result<PathBuf> {
    crate::git::repo_root(dir).map_err(|e| Error::classified(ErrorKind::Environment, e).into())
}

/// The kind of an error that reached the command line (see
/// [`crate::error`]). The typed errors of lower layers are named here, the
/// one layer that may import them all.
pub fn error_kind(e: &anyhow::Error) -> ErrorKind {
    crate::error::kind_of(e, foreign_kind)
}

/// `ConfigError` is the swarm file's; a compare-and-swap that lost
/// (`StoreError::Conflict`) refuses the request as it was made.
fn foreign_kind(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if cause.is::<crate::config::ConfigError>() {
        return Some(ErrorKind::Config);
    }
    match cause.downcast_ref::<StoreError>() {
        Some(StoreError::Conflict { .. }) => Some(ErrorKind::Refusal),
        _ => None,
    }
}

/// `--config`, or loki.toml at the root of the repo around `cwd`.
pub fn config_path(given: Option<PathBuf>, cwd: &Path) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(if p.is_absolute() { p } else { cwd.join(p) }),
        None => {
            let root = repo_root(cwd)?;
            Ok(root.join("loki.toml"))
        }
    }
}

/// The status a view shows: a stream a stopped supervisor left active is
/// `interrupted` (the next `loki run` resumes it).
fn shown_status(st: &StreamState, supervised: bool) -> &'static str {
    if !supervised && st.status.is_active() {
        "interrupted"
    } else {
        st.status.as_str()
    }
}

fn load_config(given: Option<PathBuf>, cwd: &Path) -> Result<(SwarmFile, PathBuf, String)> {
    let path = config_path(given, cwd)?;
    let cfg = crate::config::load_expanded(&path).map_err(anyhow::Error::new)?;
    let root = repo_root(&cfg.root)?;
    let target = match &cfg.swarm.target {
        Some(t) => t.clone(),
        None => crate::git::current_branch(&root)?.unwrap_or_else(|| "main".into()),
    };
    Ok((cfg, root, target))
}

/// A steering request as a person asks it (`loki approve ch01`, a click
/// on the dashboard).
struct SteerAsk {
    kind: Kind,
    id: Option<String>,
    expected_version: Option<u64>,
    note: Option<String>,
    count: bool,
}

#[allow(clippy::too_many_arguments)]
fn steer(
    config: Option<PathBuf>,
    cwd: &Path,
    kind: Kind,
    id: Option<String>,
    expected_version: Option<u64>,
    note: Option<String>,
    count: bool,
) -> Result<i32> {
    let ask = SteerAsk {
        kind,
        id,
        expected_version,
        note,
        count,
    };
    let msg = steer_request(config, cwd, ask)?;
    println!("{msg}");
    Ok(0)
}

/// Sends or applies `ask` ([`steer::steer`]): the one path of every
/// steering command and of the dashboard's buttons. Returns what to tell
/// the person.
fn steer_request(config: Option<PathBuf>, cwd: &Path, ask: SteerAsk) -> Result<String> {
    let SteerAsk {
        kind,
        id,
        expected_version,
        note,
        count,
    } = ask;
    let (cfg, root, target) = load_config(config, cwd)?;
    let stream_cfg = id.as_deref().and_then(|i| cfg.stream(i));
    let max_attempts = stream_cfg.map(|s| s.agent.max_attempts);
    let max_budget_usd = stream_cfg.and_then(|s| s.agent.max_budget_usd);
    let dependents = id
        .as_deref()
        .map(|i| crate::plan::dependents_of(&cfg.streams, i))
        .unwrap_or_default();
    if let Some(id) = &id {
        if cfg.stream(id).is_none() {
            let known: Vec<&str> = cfg.streams.iter().map(|s| s.id.as_str()).collect();
            return Err(Error::refusal(format!("unknown stream `{id}`"))
                .hint(format!(
                    "streams in {}: {}",
                    cfg.path.display(),
                    known.join(", ")
                ))
                .into());
        }
    }
    steer::steer(
        &root,
        &target,
        &Request {
            kind,
            stream: id,
            expected_version,
            note,
            count,
            max_attempts,
            max_budget_usd,
            dependents,
            agent: stream_cfg
                .map(|s| s.agent.command.clone())
                .unwrap_or_default(),
            remote: cfg.swarm.remote.clone(),
        },
    )
}

/// The rows `loki status` shows: every stream of the swarm file (pending
/// when it has no state yet) plus any state the file no longer names; and
/// whether there was any state at all.
fn status_rows(cfg: Option<&SwarmFile>, store: &StateStore) -> Result<(Vec<StreamState>, bool)> {
    let mut states = store.load_all()?;
    let has_state = !states.is_empty();
    let mut rows = Vec::new();
    if let Some(cfg) = cfg {
        for s in &cfg.streams {
            match states.iter().position(|st| st.id == s.id) {
                Some(i) => rows.push(states.remove(i)),
                None => rows.push(StreamState::new(&s.id)),
            }
        }
    }
    rows.extend(states);
    Ok((rows, has_state))
}

/// How long the stream worked: from its start to its end, less the time
/// it waited for a person's approval ([`approval_wait_secs`]).
fn duration_secs(st: &StreamState) -> Option<f64> {
    let start = st.started_at.as_deref()?;
    let end = st
        .finished_at
        .clone()
        .unwrap_or_else(crate::util::now_rfc3339);
    let all = crate::util::secs_between(start, &end)?;
    Some((all - approval_wait_secs(st).unwrap_or(0.0)).max(0.0))
}

/// How long the stream has waited (or waited) for an approval: from the
/// end of its last attempt until now (still waiting) or until its merge
/// (approved). `None` when it never waited for one.
fn approval_wait_secs(st: &StreamState) -> Option<f64> {
    let waiting = st.status == Status::AwaitingApproval;
    let approved = st.status == Status::Merged && st.approved_by.is_some();
    if !waiting && !approved {
        return None;
    }
    let from = st.attempts.last()?.ended_at.as_deref()?;
    let to = match (waiting, &st.finished_at) {
        (false, Some(f)) => f.clone(),
        _ => crate::util::now_rfc3339(),
    };
    crate::util::secs_between(from, &to).map(|s| s.max(0.0))
}

fn status(config: Option<PathBuf>, cwd: &Path, json: bool) -> Result<i32> {
    if !json {
        print!("{}", status_text(config, cwd)?);
        return Ok(0);
    }
    let StatusData {
        rows,
        swarm,
        supervisor,
        words,
        ..
    } = status_data(config, cwd)?;
    if json {
        let streams: Vec<serde_json::Value> = rows
            .iter()
            .zip(words.iter())
            .map(|(st, w)| {
                serde_json::json!({
                    "id": st.id,
                    "words": w,
                    "status": st.status,
                    "attempts": st.attempts.len(),
                    "attempt": st.attempt,
                    "version": st.version,
                    "branch": st.branch,
                    "cost_usd": st.cost_usd,
                    "duration_secs": duration_secs(st),
                    "approval_wait_secs": approval_wait_secs(st),
                    "validation": st.attempts.iter().rev().find_map(|a| a.validation.clone()),
                    "reason": st.reason,
                    "last_message": st.last_message,
                    "session_id": st.session_id,
                    "merge_commit": st.merge_commit,
                    "approved_by": st.approved_by,
                    "paused": st.paused,
                })
            })
            .collect();
        let out = serde_json::json!({
            "streams": streams,
            "swarm": {
                "version": swarm.version,
                "paused": swarm.paused,
                "pause_reason": swarm.pause_reason,
                "supervisor_pid": supervisor,
                "total_cost_usd": crate::util::total(rows.iter().map(|s| s.cost_usd)),
            }
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("encoding status")?
        );
        return Ok(0);
    }
    Ok(0)
}

/// The swarm file for status views: a broken one is reported, and the
/// states on disk are still shown.
fn load_for_status(path: &Path) -> Option<SwarmFile> {
    match crate::config::load_expanded(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: {e}\n  (showing the state on disk only)");
            None
        }
    }
}

/// What status views show.
struct StatusData {
    rows: Vec<StreamState>,
    swarm: crate::model::SwarmState,
    supervisor: Option<i32>,
    /// Words of each row's outputs, in row order.
    words: Vec<Option<u64>>,
    /// Whether any stream has a state file (a fresh clone has none).
    has_state: bool,
    /// Each stream's `depends_on`, from the swarm file.
    deps: BTreeMap<String, Vec<String>>,
    /// Every `for_each` template: id, source, dependencies, and whether its
    /// instances are known yet.
    templates: Vec<TemplateRow>,
    /// The swarm file as loaded for these rows (`None` when it did not load).
    cfg: Option<SwarmFile>,
}

/// What the status table says of a template.
struct TemplateRow {
    id: String,
    source: String,
    deps: Vec<String>,
}

/// The rows, the swarm state, the supervisor's pid and the words, for status views.
fn status_data(config: Option<PathBuf>, cwd: &Path) -> Result<StatusData> {
    let path = config_path(config, cwd)?;
    let cfg = load_for_status(&path);
    let root = repo_root(path.parent().unwrap_or(cwd))?;
    let store = StateStore::new(crate::model::Layout::new(&root).state_dir());
    let (rows, has_state) = status_rows(cfg.as_ref(), &store)?;
    let swarm = store.load_swarm()?;
    let supervisor = crate::store::SupervisorLock::holder(store.dir()).unwrap_or(None);
    let words = rows
        .iter()
        .map(|st| output_words(&root, cfg.as_ref().and_then(|c| c.stream(&st.id))))
        .collect();
    let deps = cfg
        .iter()
        .flat_map(|c| &c.streams)
        .map(|s| (s.id.to_string(), s.depends_on.clone()))
        .collect();
    let templates = cfg
        .iter()
        .flat_map(|c| &c.templates)
        .map(|t| TemplateRow {
            id: t.stream.id.to_string(),
            source: t.for_each.describe(),
            deps: t.stream.depends_on.clone(),
        })
        .collect();
    Ok(StatusData {
        rows,
        swarm,
        supervisor,
        words,
        has_state,
        deps,
        templates,
        cfg,
    })
}

/// Words in a stream's outputs as they stand now: in its worktree while it
/// has one, else in the main checkout (after the merge). `None` when no
/// output exists yet.
fn output_words(root: &Path, stream: Option<&crate::config::StreamConfig>) -> Option<u64> {
    let s = stream?;
    let wt = crate::model::Layout::new(root).worktree(&s.id);
    let base = if wt.is_dir() { wt } else { root.to_path_buf() };
    let mut total = None;
    for o in &s.outputs {
        // As the checks read it: an agent's link to /dev/zero or a FIFO
        // must not hang `loki status`.
        let read = crate::util::read_inside(&base, Path::new(o), crate::util::MAX_OUTPUT_FILE);
        if let Some(text) = read.ok().and_then(|b| String::from_utf8(b).ok()) {
            *total.get_or_insert(0) += crate::checks::count_words(&text);
        }
    }
    total
}

/// The status table and summary line. A template is one row with its
/// instances' counts ("3/4 merged"), its instances indented below it; a
/// template whose instances are not made yet is one row saying what it
/// waits for. A stream a stopped supervisor left active shows as
/// interrupted; an approval wait is shown apart from the duration.
fn status_text(config: Option<PathBuf>, cwd: &Path) -> Result<String> {
    let StatusData {
        rows,
        swarm,
        supervisor,
        words,
        has_state,
        deps,
        templates,
        ..
    } = status_data(config, cwd)?;
    use std::fmt::Write as _;
    let template_of = |id: &str| -> Option<&TemplateRow> {
        let (prefix, _) = id.rsplit_once('.')?;
        templates.iter().find(|t| t.id == prefix)
    };
    let width = rows
        .iter()
        .map(|r| r.id.chars().count() + if template_of(&r.id).is_some() { 2 } else { 0 })
        .chain(templates.iter().map(|t| t.id.chars().count()))
        .max()
        .unwrap_or(0)
        .max(14);
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 8]| {
        let [id, status, attempt, dur, words, cost, branch, last] = cells;
        let text = format!(
            "{id:<width$} {status:<18} {attempt:>7} {dur:>9} {words:>7} {cost:>8}  {branch:<18} {last}"
        );
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(
        &mut out,
        [
            "STREAM", "STATUS", "ATTEMPT", "DURATION", "WORDS", "COST", "BRANCH", "LAST",
        ],
    );
    let mut shown: BTreeSet<String> = BTreeSet::new();
    for (st, w) in rows.iter().zip(words.iter()) {
        if let Some(t) = template_of(&st.id) {
            if shown.insert(t.id.clone()) {
                let mine: Vec<(&StreamState, &Option<u64>)> = rows
                    .iter()
                    .zip(words.iter())
                    .filter(|(r, _)| template_of(&r.id).is_some_and(|x| x.id == t.id))
                    .collect();
                let merged = mine
                    .iter()
                    .filter(|(r, _)| r.status == Status::Merged)
                    .count();
                let words: Option<u64> = mine.iter().filter_map(|(_, w)| **w).reduce(|a, b| a + b);
                let cost = crate::util::total(mine.iter().map(|(r, _)| r.cost_usd));
                line(
                    &mut out,
                    [
                        &t.id,
                        &format!("{merged}/{} merged", mine.len()),
                        "-",
                        "-",
                        &words.map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
                        &format!("${cost:.2}"),
                        "(template)",
                        &format!("one stream per item of {}", t.source),
                    ],
                );
            }
        }
        // A stream a stopped supervisor left active is interrupted: the
        // next `loki run` resumes it.
        let stale = supervisor.is_none() && st.status.is_active();
        let status = shown_status(st, supervisor.is_some()).to_string();
        let dur = duration_secs(st)
            .map(|s| crate::util::fmt_duration(std::time::Duration::from_secs_f64(s)))
            .unwrap_or_else(|| "-".into());
        let mut last = st
            .reason
            .clone()
            .or_else(|| st.last_message.clone())
            .unwrap_or_default();
        if stale {
            last = format!(
                "the supervisor stopped during this attempt; `loki run` resumes it. {last}"
            );
        }
        if let Some(wait) = approval_wait_secs(st) {
            let wait = crate::util::fmt_duration(std::time::Duration::from_secs_f64(wait));
            last = match st.status {
                Status::AwaitingApproval => format!(
                    "waiting for approval for {wait} (loki approve {}). {last}",
                    st.id
                ),
                _ => format!(
                    "approved by {} after {wait}. {last}",
                    st.approved_by.as_deref().unwrap_or("someone")
                ),
            };
        }
        let branch = if st.status == Status::Merged {
            "(merged)".to_string()
        } else {
            st.branch.clone()
        };
        let id = if template_of(&st.id).is_some() {
            format!("  {}", st.id)
        } else {
            st.id.to_string()
        };
        line(
            &mut out,
            [
                &id,
                &status,
                &st.attempt.to_string(),
                &dur,
                &w.map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
                &format!("${:.2}", st.cost_usd),
                &branch,
                &crate::util::one_line(&last),
            ],
        );
    }
    for t in templates.iter().filter(|t| !shown.contains(&t.id)) {
        let waits = if t.deps.is_empty() {
            String::new()
        } else {
            format!(", made when {} merged", t.deps.join(", "))
        };
        line(
            &mut out,
            [
                &t.id,
                "waiting",
                "-",
                "-",
                "-",
                "$0.00",
                "(template)",
                &format!("one stream per item of {}{waits}", t.source),
            ],
        );
    }
    let merged = rows.iter().filter(|s| s.status == Status::Merged).count();
    let cost = crate::util::total(rows.iter().map(|s| s.cost_usd));
    let sup = match supervisor {
        Some(pid) => format!("supervisor running (pid {pid})"),
        None => "no supervisor running".into(),
    };
    let usage = usage_wait_text(&swarm)
        .map(|u| format!("; {u}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{merged}/{} merged, ${cost:.2} spent; {sup}{}{usage}{}",
        rows.len(),
        if swarm.paused {
            format!("; PAUSED: {}", swarm.pause_reason.unwrap_or_default())
        } else {
            String::new()
        },
        next_to_start(&rows, &deps)
    );
    if !has_state && !rows.is_empty() {
        // Without run state every stream reads `pending`, even in a clone
        // whose history holds their merges.
        let _ = writeln!(out, "{NO_STATE_NOTE}");
    }
    Ok(out)
}

/// "waiting for the session limit to reset at 03:00 (in 1h12m)" while
/// the swarm state records a usage window that has not reset yet.
fn usage_wait_text(swarm: &crate::model::SwarmState) -> Option<String> {
    let limit = swarm.usage_limit.as_deref()?;
    let at = chrono::DateTime::parse_from_rfc3339(swarm.usage_resets_at.as_deref()?).ok()?;
    let left = at.signed_duration_since(chrono::Utc::now()).to_std().ok()?;
    let clock = at.with_timezone(&chrono::Local).format("%H:%M");
    Some(format!(
        "waiting for {limit} to reset at {clock} (in {})",
        crate::util::fmt_duration(left)
    ))
}

/// `; next: a, b` (what starts when a run goes on: pending streams whose
/// dependencies have merged, and interrupted or retrying ones), or what
/// holds everything back (`; next: approve x`).
fn next_to_start(rows: &[StreamState], deps: &BTreeMap<String, Vec<String>>) -> String {
    let merged: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.status == Status::Merged)
        .map(|r| r.id.as_str())
        .collect();
    let next: Vec<&str> = rows
        .iter()
        .filter(|r| match r.status {
            Status::Pending => deps
                .get(r.id.as_str())
                .is_some_and(|d| d.iter().all(|x| merged.contains(x.as_str()))),
            Status::Retrying | Status::Interrupted => true,
            _ => false,
        })
        .map(|r| r.id.as_str())
        .collect();
    if !next.is_empty() {
        let more = next.len().saturating_sub(5);
        let mut s = format!("; next: {}", next[..next.len().min(5)].join(", "));
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        return s;
    }
    let approvals: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == Status::AwaitingApproval)
        .map(|r| r.id.as_str())
        .collect();
    if !approvals.is_empty() {
        return format!("; next: approve {}", approvals.join(", "));
    }
    String::new()
}

/// The note under the status table when there is no run state here.
const NO_STATE_NOTE: &str =
    "note: no run state here (.loki/state); `loki log` reads what was merged from git";
