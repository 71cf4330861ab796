//! The blocking work around one attempt, run by the dispatcher in
//! `spawn_blocking`: preparing the worktree and the prompt before the agent
//! starts, and checking and committing what it left after it stops. The
//! dispatcher decides; these functions only do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::agent::{self, Launch};
use crate::checks::{self, CheckReport, Level};
use crate::config::StreamConfig;
use crate::git::{self, Worktree};
use crate::model::trailers as keys;
use crate::model::{Layout, ProcessRecord};
use crate::process::{self, resolve_command};
use crate::prompt;
use crate::util::one_line;

/// Marker in `prompts/retry.md`: text after it is used only on the last attempt.
pub const LAST_ATTEMPT_MARKER: &str =
    "<!-- loki: the text below is added only on the last attempt -->";

/// Prompt sent when an interrupted claude session is resumed.
pub const CONTINUE_PROMPT: &str = "You were interrupted. Continue the task where you stopped: \
check what is already written in this directory, finish it, and stop when it is complete.";

pub use super::machine::Kickoff;

/// What `prepare` needs.
#[derive(Debug, Clone)]
pub struct PrepareInput {
    pub layout: Layout,
    pub stream: StreamConfig,
    /// The swarm file's folder, which the stream's `prompt` path is
    /// relative to (the repo root unless loki.toml lives in a subfolder).
    pub prompt_dir: PathBuf,
    pub target: String,
    pub attempt: u32,
    /// Attempts this stream may use in this run (for the retry text).
    pub max_attempts: u32,
    pub kickoff: Kickoff,
    /// Claude session to resume, if any.
    pub session: Option<String>,
    pub state_version: u64,
    /// Replace the agent with loki's built-in stand-in (`loki run --rehearse`).
    pub stand_in: bool,
    /// The worktree's previous attempt was interrupted: commit what it holds first.
    pub interrupted_attempt: Option<u32>,
    /// The commit the branch started from, once an attempt prepared it.
    pub base: Option<String>,
    /// Bring the branch up to date with the target first
    /// ([`git::refresh_stream`]): the stream runs again after a failure.
    pub refresh: bool,
    /// A resolver's attempt: merge the target into the worktree, leaving
    /// the conflict, and hand the agent `prompts/resolve.md`.
    pub resolve: bool,
}

#[derive(Debug)]
pub struct Prepared {
    pub worktree: Worktree,
    pub launch: Launch,
    pub prompt_file: PathBuf,
    /// Commit made of work an interrupted attempt left behind.
    pub salvaged: Option<String>,
    /// "claude 2.1.197 (Claude Code)" or the command.
    pub agent_label: String,
    /// The agent continues an earlier claude session (`--resume`).
    pub resumed: bool,
    /// A resolver's attempt: the conflict it was given.
    pub resolution: Option<git::Resolution>,
}

/// An error that retrying cannot fix (a missing input file, an unfilled
/// placeholder): the stream fails at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Creates the worktree, renders the prompt, writes it to
/// `.loki/runs/<id>/attempt-<n>/prompt.md` and builds the agent's command.
pub fn prepare(input: &PrepareInput) -> Result<Prepared> {
    let s = &input.stream;
    let lay = &input.layout;
    // An interrupted attempt's agent may have left HEAD or `.git` changed:
    // put them back before the worktree is reused and its work salvaged.
    let mut tampered = Vec::new();
    if input.interrupted_attempt.is_some()
        && lay.worktree(&s.id).join(".git").symlink_metadata().is_ok()
    {
        if let Some(base) = &input.base {
            tampered = git::guard_worktree(&lay.root, &s.id, base).unwrap_or_default();
        }
    }
    // What this attempt reads, before anything can fail: the next run
    // leaves the stream alone if it fails and none of it changes.
    let run_dir = lay.run_dir(&s.id, input.attempt);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let reads = reads_digest(s, &lay.root, &input.prompt_dir, &input.target);
    crate::util::write_atomic(&run_dir.join(READS_FILE), format!("{reads}\n").as_bytes())?;
    let mut wt = git::prepare_worktree(&lay.root, &s.id, &input.target)
        .with_context(|| format!("preparing the worktree of stream {}", s.id))?;

    let mut salvaged = None;
    if let Some(n) = input.interrupted_attempt {
        let mut body =
            "Work the interrupted attempt left in the worktree, committed when the stream resumed."
                .to_string();
        for t in &tampered {
            body.push_str(&format!("\n\nPut back: {t}"));
        }
        salvaged = git::commit_stream(
            &lay.root,
            &s.id,
            &s.outputs,
            &format!("loki: {} attempt {n} (interrupted)", s.id),
            &body,
            &[
                (keys::STREAM.into(), s.id.to_string()),
                (keys::ATTEMPT.into(), format!("{n} (interrupted)")),
            ],
        )
        .with_context(|| format!("committing the interrupted work of stream {}", s.id))?;
    }

    if input.refresh && wt.reused {
        let refreshed = git::refresh_stream(&lay.root, &s.id, &input.target)
            .with_context(|| format!("bringing stream {} up to date", s.id))?;
        match refreshed {
            git::Refresh::UpToDate => {}
            git::Refresh::Merged { target, .. } => wt.base = target,
            git::Refresh::Conflict { paths } => {
                return Err(Fatal(format!(
                    "bringing {} up to date with {} before running it again conflicts in {}: \
                     merge {} into the worktree {} by hand (git merge {}), commit, and `loki \
                     retry {}`",
                    wt.branch,
                    input.target,
                    paths.join(", "),
                    input.target,
                    wt.path.display(),
                    input.target,
                    s.id
                ))
                .into())
            }
        }
    }

    let template_path = input.prompt_dir.join(&s.prompt);
    let template = prompt::read_template(&lay.root, &input.prompt_dir, &s.prompt).map_err(Fatal)?;
    // On a retry, {{FEEDBACK}} (and the preamble when the template has no
    // such slot) is the rendered `prompts/retry.md`: the violations, and on
    // the last attempt the insistent part.
    let preamble = match &input.kickoff {
        Kickoff::Retry { feedback, last } => retry_preamble(
            &lay.root,
            input.attempt,
            input.max_attempts,
            feedback,
            *last,
        ),
        _ => String::new(),
    };
    let feedback = preamble.clone();
    let mut values = base_values(s, &input.target, input.attempt, &feedback);
    prompt::read_inputs(&wt.path, &s.inputs, &mut values).map_err(Fatal)?;
    let has_feedback_slot = prompt::placeholders(&template)
        .iter()
        .any(|(n, _, _)| n == "FEEDBACK");
    let full = prompt::render(&template, &values).map_err(|missing| {
        Fatal(format!(
            "the template {} has placeholders nothing fills: {}",
            template_path.display(),
            missing.join(", ")
        ))
    })?;

    let resuming =
        s.agent.is_claude() && s.agent.resume && input.session.is_some() && !input.stand_in;
    let stream_prompt = input.resolve.then(|| full.clone());
    let text = match &input.kickoff {
        Kickoff::Fresh => full,
        Kickoff::Continue if resuming => CONTINUE_PROMPT.to_string(),
        Kickoff::Continue => full,
        Kickoff::Retry { .. } => {
            if resuming {
                // The session already holds the task; send what changed.
                preamble
            } else if has_feedback_slot {
                full
            } else {
                format!("{preamble}\n\n---\n\n{full}")
            }
        }
    };

    // A resolver's attempt: the target merged into the worktree, the
    // conflict left in it, and the resolve prompt around the stream's own.
    let mut resolution = None;
    let text = if let Some(stream_prompt) = stream_prompt {
        let r = git::start_resolution(&lay.root, &s.id, &input.target)
            .with_context(|| format!("merging {} into stream {}", input.target, s.id))?;
        let text = resolve_prompt(&lay.root, s, &input.target, &r, &stream_prompt);
        resolution = Some(r);
        text
    } else {
        text
    };

    let prompt_file = run_dir.join("prompt.md");
    crate::util::write_atomic(&prompt_file, text.as_bytes())?;

    let mut env: Vec<(String, String)> = vec![
        ("LOKI_STREAM_ID".into(), s.id.to_string()),
        ("LOKI_ATTEMPT".into(), input.attempt.to_string()),
        ("LOKI_PROMPT_FILE".into(), prompt_file.display().to_string()),
        (
            "LOKI_SIGNALS_DIR".into(),
            lay.signals_dir().display().to_string(),
        ),
        ("LOKI_STATE_VERSION".into(), input.state_version.to_string()),
    ];
    for (k, v) in &s.agent.env {
        env.push((k.clone(), v.clone()));
    }

    let (program, args, claude, agent_label) = if input.stand_in {
        let exe = std::env::current_exe()
            .context("locating the loki executable for the stand-in agent")?;
        env.push(("LOKI_STAND_IN_SPEC".into(), stand_in_spec(s)));
        (
            exe.display().to_string(),
            vec!["stand-in".to_string()],
            false,
            "loki stand-in (rehearsal)".to_string(),
        )
    } else {
        let program = resolve_command(&lay.root, &s.agent.command);
        let claude = s.agent.is_claude();
        let args = if claude {
            let resume = if resuming {
                input.session.as_deref()
            } else {
                None
            };
            agent::claude_args_with_prompt_file(&s.agent, &text, resume, Some(&prompt_file))
        } else {
            s.agent.args.clone()
        };
        // Only claude is asked its version: a plain agent might run for real.
        let version = if claude {
            process::agent_version(&program)
        } else {
            String::new()
        };
        let label = if version.is_empty() {
            s.agent.command.clone()
        } else {
            format!("{} {}", s.agent.command, version)
        };
        (program, args, claude, label)
    };

    let sandbox = sandbox_for(&s.agent, lay, &wt.path)?;
    let launch = Launch {
        program,
        args,
        cwd: wt.path.clone(),
        env,
        transcript: lay.transcript(&s.id, input.attempt),
        stderr_log: lay.stderr_log(&s.id, input.attempt),
        claude,
        timeout: s.agent.timeout,
        idle_timeout: s.agent.idle_timeout,
        kill_grace: s.agent.kill_grace,
        sandbox,
    };
    Ok(Prepared {
        worktree: wt,
        launch,
        prompt_file,
        salvaged,
        agent_label,
        resumed: resuming && !input.resolve,
        resolution,
    })
}

/// The resolver's prompt: `prompts/resolve.md` (yours to edit) when it is
/// there and every placeholder in it is filled, else the built-in one.
fn resolve_prompt(
    root: &Path,
    s: &StreamConfig,
    target: &str,
    r: &git::Resolution,
    stream_prompt: &str,
) -> String {
    let list = |items: &[String], none: &str| {
        if items.is_empty() {
            none.to_string()
        } else {
            items
                .iter()
                .map(|i| format!("- {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let merges: Vec<String> = r
        .theirs
        .iter()
        .filter(|t| t.starts_with("Merge stream "))
        .cloned()
        .collect();
    let values: BTreeMap<String, String> = [
        (
            "CONFLICTED_FILES",
            list(
                &r.conflicted
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>(),
                "(none: the target merged cleanly this time; check the result and stop)",
            ),
        ),
        (
            "CONFLICTED_PATHS",
            r.conflicted
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("OURS", list(&r.ours, "(none)")),
        ("THEIRS", list(&r.theirs, "(none)")),
        ("STREAM_PROMPT", stream_prompt.to_string()),
        ("TARGET_MERGES", list(&merges, "(none)")),
        ("TARGET", target.to_string()),
        ("STREAM_ID", s.id.to_string()),
        (
            "OUTPUTS",
            s.outputs
                .iter()
                .map(|o| format!("`{o}`"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let own = crate::util::read_inside(
        root,
        Path::new(prompt::RESOLVE_FILE),
        crate::util::MAX_PROMPT_FILE,
    )
    .ok()
    .and_then(|b| String::from_utf8(b).ok());
    own.and_then(|t| prompt::render(&t, &values).ok())
        .or_else(|| prompt::render(prompt::RESOLVE_TEMPLATE, &values).ok())
        .unwrap_or_default()
}

/// The bubblewrap sandbox of an attempt whose agent asks for one: what it
/// may write is computed here, from the layout and the git dir.
fn sandbox_for(
    agent: &crate::config::AgentSettings,
    lay: &Layout,
    worktree: &Path,
) -> Result<Option<agent::sandbox::Sandbox>> {
    if agent.sandbox != crate::config::Sandbox::Bwrap {
        return Ok(None);
    }
    let bwrap = agent::sandbox::locate().context(
        "bwrap (bubblewrap) is gone since the run started\n  help: install bubblewrap again, \
         or set `sandbox = \"none\"` in [agent]",
    )?;
    let common = crate::git::common_dir(&lay.root)?;
    let same = |a: &Path| std::fs::canonicalize(a).ok() == std::fs::canonicalize(worktree).ok();
    let registration = crate::git::registrations(&lay.root)?
        .into_iter()
        .find(|r| same(&r.path))
        .map(|r| common.join("worktrees").join(r.name))
        .with_context(|| {
            format!(
                "the worktree {} has no git registration to sandbox",
                worktree.display()
            )
        })?;
    let home = agent
        .env
        .get("HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    let signals = lay.signals_dir();
    let places = agent::sandbox::Places {
        root: &lay.root,
        worktree,
        git_common: &common,
        registration: &registration,
        signals: &signals,
        home: home.as_deref(),
        claude: agent.is_claude(),
    };
    let sandbox = agent::sandbox::Sandbox::for_attempt(bwrap, &places)
        .with_context(|| format!("preparing the sandbox of {}", worktree.display()))?;
    Ok(Some(sandbox))
}

/// The file in an attempt's run folder that holds [`reads_digest`].
pub const READS_FILE: &str = "reads";

/// One digest of everything a stream reads: its resolved entry in
/// loki.toml, its prompt template (from the checkout, as an attempt reads
/// it), `prompts/retry.md`, and each input's object in the target's tree
/// (every file a glob input matches). Equal digests mean a rerun would be
/// handed the same task: `loki run` leaves a failed stream alone then.
pub fn reads_digest(s: &StreamConfig, root: &Path, prompt_dir: &Path, target: &str) -> String {
    let mut text = format!("{s:?}\n");
    match prompt::read_template(root, prompt_dir, &s.prompt) {
        Ok(t) => text.push_str(&t),
        Err(e) => text.push_str(&format!("no template: {e}")),
    }
    text.push('\n');
    text.push_str(&prompt::retry_template(root));
    if let Some(tree) = git::BranchTree::open(root, Some(target)) {
        for (name, rel) in &s.inputs {
            let files = if crate::util::is_glob(rel) {
                tree.files_matching(rel)
            } else {
                vec![rel.trim_start_matches("./").to_string()]
            };
            for f in files {
                let id = tree.object_id(&f).unwrap_or_else(|| "missing".into());
                text.push_str(&format!("\n{name} {f} {id}"));
            }
        }
    }
    format!("{:016x}", crate::util::fnv1a(text.as_bytes()))
}

/// Vars plus loki's built-ins.
pub fn base_values(
    s: &StreamConfig,
    target: &str,
    attempt: u32,
    feedback: &str,
) -> BTreeMap<String, String> {
    let mut values = s.vars.clone();
    values.insert("STREAM_ID".into(), s.id.to_string());
    values.insert("ATTEMPT".into(), attempt.to_string());
    values.insert("FEEDBACK".into(), feedback.to_string());
    values.insert("TARGET".into(), target.to_string());
    values.insert("BRANCH".into(), crate::model::paths::branch_name(&s.id));
    let outs: Vec<String> = s.outputs.iter().map(|o| format!("`{o}`")).collect();
    values.insert("OUTPUTS".into(), outs.join(", "));
    values
}

/// The retry preamble from `prompts/retry.md` (or the built-in one): the
/// part before the last-attempt marker always, the part after it only on the
/// last attempt.
pub fn retry_preamble(root: &Path, attempt: u32, max: u32, feedback: &str, last: bool) -> String {
    let text = prompt::retry_template(root);
    let (first, rest) = match text.find(LAST_ATTEMPT_MARKER) {
        Some(i) => (&text[..i], &text[i + LAST_ATTEMPT_MARKER.len()..]),
        None => (text.as_str(), ""),
    };
    let chosen = if last && !rest.trim().is_empty() {
        format!("{}\n{}", first.trim_end(), rest.trim_start())
    } else {
        first.trim_end().to_string()
    };
    let mut values = BTreeMap::new();
    values.insert("ATTEMPT".to_string(), attempt.saturating_sub(1).to_string());
    values.insert("MAX_ATTEMPTS".to_string(), max.to_string());
    values.insert("VIOLATIONS".to_string(), feedback.to_string());
    // A broken user template must not stop the run: fall back to plain text.
    prompt::render(&chosen, &values).unwrap_or_else(|_| {
        format!("Your previous attempt did not pass review. Fix these points:\n\n{feedback}")
    })
}

/// What the stand-in agent must produce, as JSON in `LOKI_STAND_IN_SPEC`.
fn stand_in_spec(s: &StreamConfig) -> String {
    serde_json::json!({
        "id": s.id,
        "outputs": s.outputs,
        "words": s.checks.words,
        "require": s.checks.require,
        "forbid": s.checks.forbid,
    })
    .to_string()
}

/// What `finish` needs.
#[derive(Debug, Clone)]
pub struct FinishInput {
    pub layout: Layout,
    pub stream: StreamConfig,
    pub attempt: u32,
    /// Base commit of the branch (for the canonical check's touched files).
    pub base: String,
    /// Whether the agent itself succeeded (only then are checks run).
    pub agent_ok: bool,
    /// Why the agent failed, when it did.
    pub agent_failure: Option<String>,
    pub trailers: Vec<(String, String)>,
    /// Told the group of each check command as it starts.
    pub on_process: Option<ProcessSink>,
    /// A resolver's attempt: the target's commit it merged.
    pub resolution: Option<String>,
}

/// Where the process group of a child started during an attempt's blocking
/// work (a check command) is reported, so the supervisor records it.
#[derive(Clone)]
pub struct ProcessSink(pub std::sync::Arc<dyn Fn(ProcessRecord) + Send + Sync>);

impl std::fmt::Debug for ProcessSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessSink")
    }
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub commit: Option<String>,
    pub report: Option<CheckReport>,
    /// What the agent changed in the worktree's `.git`, HEAD or branch (put
    /// back now): each a reason the attempt fails.
    pub tampered: Vec<String>,
    /// What is wrong with a resolver's work (a marker left, a stray change).
    pub resolve_failure: Option<String>,
}

/// Runs the checks (when the agent succeeded), writes
/// `.loki/runs/<id>/attempt-<n>/checks.json`, and commits what the agent left
/// in the worktree with loki's trailers, so every attempt is in the history.
pub fn finish(input: &FinishInput) -> Result<Finished> {
    let s = &input.stream;
    let wt = input.layout.worktree(&s.id);
    // First put back what the agent changed in git's view of the worktree,
    // so the checks and the commit below see it as loki made it.
    let tampered = git::guard_worktree(&input.layout.root, &s.id, &input.base)
        .with_context(|| format!("checking the worktree of stream {}", s.id))?;
    // A resolver's work is checked for what git would not let pass: a
    // conflict marker left, or a change the conflict did not call for.
    let mut resolve_failure = None;
    if let (Some(target_head), true, true) =
        (&input.resolution, input.agent_ok, tampered.is_empty())
    {
        let (markers, strays) =
            git::resolution_problems(&input.layout.root, &s.id, target_head, &s.outputs)?;
        if !markers.is_empty() {
            resolve_failure = Some(format!(
                "the resolution leaves a conflict marker in {}",
                markers.join(", ")
            ));
        } else if !strays.is_empty() {
            resolve_failure = Some(format!(
                "the resolution changes what the conflict did not call for: {} (only the \
                 conflicted files and the stream's outputs may change)",
                strays.join(", ")
            ));
        }
    }
    // What the agent left, staged once: the checks judge its changes and,
    // when they run no command (nothing else writes in the worktree), the
    // commit is that same tree. A check command may write files, so its
    // stream is staged again for the commit, as before.
    let mut staged = None;
    let report = if input.agent_ok && tampered.is_empty() && resolve_failure.is_none() {
        let reading = || format!("reading what attempt {} of {} changed", input.attempt, s.id);
        // Unknown (git could not say) is neither "nothing changed" nor a
        // pass for the checks that judge the changes: the attempt fails.
        let snapshot =
            git::stage_stream(&input.layout.root, &s.id, &s.outputs).with_context(reading)?;
        let touched = Some(snapshot.touched_since(&input.base).with_context(reading)?);
        if input.resolution.is_none() && !s.checks.runs_commands() {
            staged = Some(snapshot);
        }
        let env: Vec<(String, String)> = vec![
            ("LOKI_STREAM_ID".into(), s.id.to_string()),
            ("LOKI_ATTEMPT".into(), input.attempt.to_string()),
        ];
        let on_start = input
            .on_process
            .as_ref()
            .map(|sink| &*sink.0 as process::OnStart<'_>);
        let report = checks::run_checks_watched(&wt, s, touched.as_deref(), &env, on_start);
        let path = input
            .layout
            .run_dir(&s.id, input.attempt)
            .join("checks.json");
        let json = serde_json::to_vec_pretty(&report).context("encoding the check report")?;
        crate::util::write_atomic(&path, &json)?;
        Some(report)
    } else {
        None
    };

    let mut trailers = input.trailers.clone();
    let (subject, body) = match (&report, &input.agent_failure) {
        _ if !tampered.is_empty() => {
            let why = tampered.join("; ");
            trailers.push((keys::OUTCOME.into(), one_line(&why)));
            (
                format!(
                    "loki: {} attempt {} (refused: the worktree was altered)",
                    s.id, input.attempt
                ),
                tampered.join("\n"),
            )
        }
        (Some(r), _) => {
            trailers.push((keys::CHECKS.into(), one_line(&r.summary)));
            let verdict = match r.status {
                Level::Fail => "checks failed",
                Level::Warn => "checks passed with warnings",
                Level::Pass => "checks passed",
            };
            (
                format!("loki: {} attempt {} ({verdict})", s.id, input.attempt),
                r.summary.clone(),
            )
        }
        (None, Some(why)) => {
            trailers.push((keys::OUTCOME.into(), one_line(why)));
            (
                format!("loki: {} attempt {} (agent failed)", s.id, input.attempt),
                why.clone(),
            )
        }
        (None, None) => (
            format!("loki: {} attempt {}", s.id, input.attempt),
            String::new(),
        ),
    };
    let commit = match &input.resolution {
        // Nothing of a failed resolution reaches the branch: its markers
        // could be merged as they are by the next retry.
        Some(target_head) => {
            let passed = resolve_failure.is_none()
                && input.agent_ok
                && tampered.is_empty()
                && report.as_ref().is_some_and(|r| r.status != Level::Fail);
            if passed {
                git::commit_resolution(
                    &input.layout.root,
                    &s.id,
                    &s.outputs,
                    &format!(
                        "loki: {} attempt {} (resolve: merge conflict resolved, checks passed)",
                        s.id, input.attempt
                    ),
                    &body,
                    &trailers,
                    target_head,
                )
                .with_context(|| format!("committing the resolution of stream {}", s.id))?
            } else {
                None
            }
        }
        None => match staged {
            Some(staged) => staged.commit(&subject, &body, &trailers),
            None => git::commit_stream(
                &input.layout.root,
                &s.id,
                &s.outputs,
                &subject,
                &body,
                &trailers,
            ),
        }
        .with_context(|| format!("committing attempt {} of stream {}", input.attempt, s.id))?,
    };
    Ok(Finished {
        commit,
        report,
        tampered,
        resolve_failure,
    })
}

/// Commits whatever a reviewer changed by hand in the stream's worktree
/// (after `loki check`, before `loki approve`), so the merge takes exactly
/// what was reviewed. `None` when the worktree is gone or clean.
pub fn commit_review_edits(layout: &Layout, id: &str, attempt: u32) -> Result<Option<String>> {
    let wt = layout.worktree(id);
    if !wt.join(".git").exists() {
        return Ok(None);
    }
    git::commit_stream(
        &layout.root,
        id,
        &[],
        &format!("loki: {id} edits made in the worktree before the merge"),
        "Changes found uncommitted in the stream's worktree when it was merged (a reviewer's hand edits).",
        &[
            (keys::STREAM.into(), id.to_string()),
            (keys::ATTEMPT.into(), format!("{attempt} (edited)")),
        ],
    )
    .with_context(|| format!("committing the edits in the worktree of {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_attempt_text_only_on_last_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let second = retry_preamble(dir.path(), 2, 3, "- `dragon` on line 3", false);
        assert!(second.contains("- `dragon` on line 3"));
        assert!(!second.contains("last attempt"));
        let third = retry_preamble(dir.path(), 3, 3, "- `dragon` on line 3", true);
        assert!(third.contains("This is the last attempt"));
        assert!(third.contains("stop with an error"));
        assert_eq!(third.matches("`dragon`").count(), 2);
    }

    #[test]
    fn trailer_values_are_one_line() {
        assert_eq!(one_line("a\n b\tc"), "a b c");
    }
}
