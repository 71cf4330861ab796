//! Pass 2: the typed swarm file checked against the repository it is in.
//! Prompt templates are read (from the main checkout, relative to the swarm
//! file's folder) and their placeholders matched to what the stream fills;
//! `prompts/retry.md` likewise; and, in the target branch's tree, each
//! input and check script must be there. Creates nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use super::diag::{suggest, utf8_text, At, Res};
use super::parse::{normal_path, Parsed, StreamAt};
use super::{ConfigError, StreamConfig, BUILTIN_PLACEHOLDERS, RETRY_PLACEHOLDERS};
use crate::git::{BranchTree, TreeEntry};
use crate::util::{
    glob_match, is_glob, read_inside, read_under, FileRefusal, FOLDER, MAX_PROMPT_FILE,
};
use crate::{plan, prompt};

/// Runs pass 2 on what pass 1 made. Refusals come in this order: prompt
/// files and their placeholders (stream by stream), `prompts/retry.md`,
/// outputs shared by unrelated streams, outputs that are folders or behind
/// links, then each stream's inputs and check script. The tree checks are
/// skipped when the swarm file is not in a repository with the target
/// branch (`loki run` refuses that itself).
pub(super) fn check(parsed: &Parsed) -> Res<()> {
    let c = Checker {
        file: &parsed.file,
        streams: &parsed.swarm.streams,
        at: &parsed.at,
        check_command: parsed.check_command,
        check_commands: &parsed.check_commands,
    };
    let root = &parsed.swarm.root;
    // Run time reads these from the main worktree's root, which is the
    // swarm file's folder unless the file lives deeper in the repo.
    let repo_root = crate::git::repo_root(root).ok();
    let top = repo_root.clone().unwrap_or_else(|| root.clone());
    let mut cache = HashMap::new();
    for r in c.raws() {
        c.check_template(r, None, root, &top, &mut cache)?;
        for name in &r.cfg.checks.validators {
            let (Some(v), Some(at)) = (
                parsed.swarm.validators.get(name),
                parsed.validator_prompts.get(name),
            ) else {
                continue;
            };
            c.check_template(r, Some((v, *at)), root, &top, &mut cache)?;
        }
    }
    check_retry_template(&top)?;
    let tree = repo_root
        .as_deref()
        .and_then(|r| BranchTree::open(r, parsed.swarm.swarm.target.as_deref()));
    let in_target = |rel: &str| tree.as_ref().is_some_and(|t| t.entry(rel).is_some());
    c.check_shared_outputs(&in_target)?;
    for r in c.raws() {
        c.check_output_kinds(r, &top, tree.as_ref())?;
    }
    if let Some(tree) = &tree {
        let graph = plan::Upstream::new(c.streams);
        let writers = writers_of(c.streams);
        for (i, r) in c.raws().into_iter().enumerate() {
            // Walked only when a stream reads a file some stream writes.
            let mut up: Option<BTreeSet<usize>> = None;
            // A glob asks whether an upstream stream writes any file it matches.
            let mut upstream = |key: &str| -> bool {
                let ws: Vec<usize> = if is_glob(key) {
                    writers
                        .iter()
                        .filter(|(path, _)| glob_match(key, path))
                        .flat_map(|(_, ws)| ws.iter().copied())
                        .collect()
                } else {
                    match writers.get(key) {
                        Some(ws) => ws.clone(),
                        None => return false,
                    }
                };
                if ws.is_empty() {
                    return false;
                }
                let up = up.get_or_insert_with(|| graph.of(i).into_iter().collect());
                ws.iter().any(|w| up.contains(w))
            };
            c.check_inputs(r, tree, &mut upstream)?;
            c.check_script(r, tree, &mut upstream)?;
        }
    }
    Ok(())
}

/// A stream and where its parts stand in the swarm file.
#[derive(Clone, Copy)]
struct Raw<'a> {
    cfg: &'a StreamConfig,
    at: &'a StreamAt,
}

struct Checker<'a> {
    /// The swarm file as the caller named it.
    file: &'a Path,
    streams: &'a [StreamConfig],
    /// Parallel to `streams`.
    at: &'a [StreamAt],
    /// The `command` value in `[checks]`.
    check_command: Option<At>,
    /// The named commands' values in `[checks.commands]`.
    check_commands: &'a BTreeMap<String, At>,
}

impl Checker<'_> {
    fn err(&self, at: At, message: impl Into<String>, help: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, at, message, help)
    }

    fn raws(&self) -> Vec<Raw<'_>> {
        self.streams
            .iter()
            .zip(self.at)
            .map(|(cfg, at)| Raw { cfg, at })
            .collect()
    }

    /// The prompt file of `r` (or of its validator `v`, at the position of
    /// the validator's `prompt`) exists and every placeholder in it is
    /// filled.
    fn check_template(
        &self,
        r: Raw<'_>,
        v: Option<(&super::Validator, At)>,
        root: &Path,
        top: &Path,
        cache: &mut HashMap<PathBuf, String>,
    ) -> Res<()> {
        let s = &r.cfg;
        let prompt_path = v.map_or(&s.prompt, |(v, _)| &v.prompt);
        let shown = self
            .file
            .parent()
            .unwrap_or(Path::new(""))
            .join(prompt_path);
        let abs = root.join(prompt_path);
        if !cache.contains_key(&abs) {
            let p = prompt_path.display();
            let at = v.map_or(r.at.prompt, |(_, at)| at);
            let text = match read_under(top, root, prompt_path, MAX_PROMPT_FILE) {
                Ok((_, b)) => String::from_utf8(b).map_err(|_| {
                    self.err(
                        at,
                        format!("prompt file `{p}` is not UTF-8 text"),
                        "save the template as UTF-8",
                    )
                }),
                Err(FileRefusal::Missing) => Err(self.err(
                    at,
                    format!("prompt file `{p}` not found"),
                    format!(
                        "create {} or fix the path; prompt paths are relative to the swarm \
                         file's folder ({}), and prompts are read from the main checkout \
                         when the swarm file is validated",
                        shown.display(),
                        root.display()
                    ),
                )),
                Err(FileRefusal::Outside | FileRefusal::NotRelative) => Err(self.err(
                    at,
                    format!(
                        "prompt `{p}` is outside the repository ({}): loki reads only files \
                         inside it",
                        top.display()
                    ),
                    "copy the template into the repository (e.g. prompts/) and point `prompt` \
                     at it, relative to the swarm file's folder",
                )),
                Err(FileRefusal::NotFile(FOLDER)) => Err(self.err(
                    at,
                    format!("prompt `{p}` is a folder, not a file"),
                    "point `prompt` at a template file such as \"prompts/chapter.md\"",
                )),
                Err(why @ FileRefusal::Symlink { .. }) => Err(self.err(
                    at,
                    format!("prompt `{p}` {why}"),
                    "put the template itself in the repository, not a link to it",
                )),
                Err(why @ FileRefusal::TooLarge(_)) => Err(self.err(
                    at,
                    format!("prompt file `{p}` {why}"),
                    "a prompt is sent to the agent whole: shorten the template (loki reads at \
                     most 8 MiB of a template or an input)",
                )),
                Err(why) => Err(self.err(
                    at,
                    format!("prompt `{p}` {why}"),
                    "point `prompt` at a regular, readable template file in the repository",
                )),
            }?;
            cache.insert(abs.clone(), text);
        }
        let Some(text) = cache.get(&abs) else {
            return Ok(());
        };
        for (name, line, col) in prompt::placeholders(text) {
            let filled = s.vars.contains_key(&name)
                || s.inputs.contains_key(&name)
                || BUILTIN_PLACEHOLDERS.contains(&name.as_str())
                || (v.is_some() && prompt::VALIDATOR_PLACEHOLDERS.contains(&name.as_str()));
            if filled {
                continue;
            }
            if let Some((v, _)) = v {
                return Err(ConfigError {
                    file: shown,
                    line,
                    col,
                    message: format!(
                        "placeholder {{{{{name}}}}} of validator `{}` is not filled for stream `{}`",
                        v.name, s.id
                    ),
                    help: format!(
                        "a validator's prompt is filled from the stream it judges: add `vars = {{ {name} = \"...\" }}` or an input to stream `{}` ({}:{}), or remove the placeholder; loki itself fills {}, {}",
                        s.id,
                        self.file.display(),
                        r.at.header.0,
                        BUILTIN_PLACEHOLDERS.join(", "),
                        prompt::VALIDATOR_PLACEHOLDERS.join(", ")
                    ),
                });
            }
            let known: Vec<&String> = s.vars.keys().chain(s.inputs.keys()).collect();
            let near = suggest(&name, &known)
                .map(|k| format!("the stream fills {{{{{k}}}}}: is one of the two misspelt? "))
                .unwrap_or_default();
            return Err(ConfigError {
                file: shown,
                line,
                col,
                message: format!(
                    "placeholder {{{{{name}}}}} is not filled for stream `{}`",
                    s.id
                ),
                help: format!(
                    "{near}add `vars = {{ {name} = \"...\" }}` or an input (`inputs = {{ {name} = \
                     \"path/to/file.md\" }}`) to stream `{}` ({}:{}), or remove the placeholder \
                     from the template; loki itself fills {}",
                    s.id,
                    self.file.display(),
                    r.at.header.0,
                    BUILTIN_PLACEHOLDERS.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Two streams may name the same new output only when one of them
    /// depends on the other (it revises what the first merged); otherwise
    /// both would create the file and the second merge would conflict,
    /// hours into a run. A file already in the target (`in_target`) is
    /// edited by both, which git may merge cleanly: allowed.
    fn check_shared_outputs(&self, in_target: &dyn Fn(&str) -> bool) -> Res<()> {
        let raws = self.raws();
        let configs = self.streams;
        // Every stream that lists a path so far: a new one must be related
        // to each of them (two revisers of one draft collide too).
        let mut owners: HashMap<String, Vec<usize>> = HashMap::new();
        let graph = plan::Upstream::new(configs);
        let mut ups: Vec<Option<Vec<String>>> = vec![None; raws.len()];
        let mut upstream = |k: usize| -> Vec<String> {
            ups[k]
                .get_or_insert_with(|| {
                    graph
                        .of(k)
                        .into_iter()
                        .map(|j| configs[j].id.to_string())
                        .collect()
                })
                .clone()
        };
        for (j, r) in raws.iter().enumerate() {
            for (out, span) in r.cfg.outputs.iter().zip(&r.at.outputs) {
                let key = normal_path(out);
                let before = owners.entry(key.clone()).or_default();
                if before.is_empty() || in_target(&key) {
                    before.push(j);
                    continue;
                }
                let mut unrelated = None;
                for &i in before.iter() {
                    let related = upstream(j).iter().any(|u| raws[i].cfg.id == *u)
                        || upstream(i).iter().any(|u| r.cfg.id == *u);
                    if !related {
                        unrelated = Some(i);
                        break;
                    }
                }
                let Some(i) = unrelated else {
                    before.push(j);
                    continue;
                };
                let first = &raws[i];
                let at = first
                    .cfg
                    .outputs
                    .iter()
                    .position(|o| normal_path(o) == key)
                    .and_then(|k| first.at.outputs.get(k))
                    .map(|(l, c)| format!(" (line {l}, column {c})"))
                    .unwrap_or_default();
                return Err(self.err(
                    *span,
                    format!(
                        "`outputs`: \"{out}\" is also an output of stream `{}`{at}, and neither \
                         stream depends on the other: both would create it and the second merge \
                         would conflict",
                        first.cfg.id
                    ),
                    format!(
                        "give the file to one stream, or add depends_on = [\"{}\"] to stream `{}` \
                         so that it revises the merged version",
                        first.cfg.id, r.cfg.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// No output of `r` is a folder (in the target tree or the checkout at
    /// `top`) or lies behind a symlink committed to the target: the agent
    /// could not write it as a file, or would write through the link to
    /// wherever it points, and the checks would count it as written.
    fn check_output_kinds(&self, r: Raw<'_>, top: &Path, tree: Option<&BranchTree>) -> Res<()> {
        for (out, at) in r.cfg.outputs.iter().zip(&r.at.outputs) {
            let key = normal_path(out);
            let what = format!("`outputs`: \"{out}\"");
            if let Some((link, to)) = tree.and_then(|t| t.link_on_path(&key)) {
                let b = tree.map(BranchTree::branch).unwrap_or_default();
                return Err(self.err(
                    *at,
                    format!(
                        "{what} is reached through a symlink in branch `{b}`: `{link}` points \
                         to `{to}` (a symlink anywhere on the path is refused)"
                    ),
                    "write outputs to plain folders of the repository: replace the link with \
                     a folder, or choose another path",
                ));
            }
            let folder_in_tree = tree.is_some_and(|t| t.entry(&key) == Some(TreeEntry::Folder));
            let folder_here = std::fs::symlink_metadata(top.join(&key)).is_ok_and(|m| m.is_dir());
            if folder_in_tree || folder_here {
                return Err(self.err(
                    *at,
                    format!("{what} is a folder in the repository, not a file"),
                    "list the files the stream writes, e.g. \"chapters/ch01.md\", not their \
                     folder",
                ));
            }
        }
        Ok(())
    }

    /// The first symlink committed on the way to `key` in `tree`, as a
    /// refusal of `what` at `at`.
    fn link_in_tree(&self, at: At, what: &str, key: &str, tree: &BranchTree) -> Res<()> {
        let Some((link, to)) = tree.link_on_path(key) else {
            return Ok(());
        };
        Err(self.err(
            at,
            format!(
                "{what}: `{key}` is reached through a symlink in branch `{}`: `{link}` points to \
                 `{to}` (a symlink anywhere on the path is refused)",
                tree.branch()
            ),
            "commit the file itself, in plain folders of the repository, instead of a link to it",
        ))
    }

    /// Every input of `r` is a file in the target tree or an output of a
    /// stream it depends on (directly or not): what its worktree will hold.
    fn check_inputs(
        &self,
        r: Raw<'_>,
        tree: &BranchTree,
        upstream: &mut dyn FnMut(&str) -> bool,
    ) -> Res<()> {
        let id = &r.cfg.id;
        let b = tree.branch();
        for (name, rel) in &r.cfg.inputs {
            let key = normal_path(rel);
            if upstream(&key) {
                continue;
            }
            let span = r.at.inputs.get(name).copied().unwrap_or(r.at.header);
            let what = format!("input {{{{{name}}}}} of stream `{id}`");
            if is_glob(rel) {
                if tree.files_matching(rel).is_empty() {
                    return Err(self.err(
                        span,
                        format!(
                            "{what}: no file in branch `{b}` matches `{rel}`, and no stream that \
                             `{id}` depends on writes one"
                        ),
                        "commit a matching file, fix the pattern (`*` stays within one folder, \
                         `**` crosses folders), or add the stream (or template) that writes \
                         the files to depends_on",
                    ));
                }
                continue;
            }
            self.link_in_tree(span, &what, &key, tree)?;
            match tree.entry(&key) {
                Some(TreeEntry::Folder) => {
                    return Err(self.err(
                        span,
                        format!("{what}: `{rel}` is a folder in branch `{b}`, not a file"),
                        "point the input at a file: its contents fill the placeholder",
                    ))
                }
                Some(_) if tree.file_size(&key).is_some_and(|n| n > MAX_PROMPT_FILE) => {
                    return Err(self.err(
                        span,
                        format!("{what}: `{rel}` is larger than 8 MiB in branch `{b}`"),
                        "its contents fill a placeholder of a prompt that is sent whole: give \
                         the stream a shorter file (loki reads at most 8 MiB of an input)",
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(self.err(
                        span,
                        format!(
                            "{what}: `{rel}` is not in branch `{b}`, and no stream that `{id}` \
                             depends on writes it"
                        ),
                        missing_file_help(&key, id, tree, self.streams),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The script a check command of `r` runs (see [`script_of`]) is there
    /// when the command runs: in the target tree (executable when run
    /// directly) or written by a stream `r` depends on; an absolute path on
    /// this machine.
    fn check_script(
        &self,
        r: Raw<'_>,
        tree: &BranchTree,
        upstream: &mut dyn FnMut(&str) -> bool,
    ) -> Res<()> {
        let id = &r.cfg.id;
        if let Some(cmd) = r.cfg.checks.command.as_deref() {
            let span =
                r.at.check_command
                    .or(self.check_command)
                    .unwrap_or(r.at.header);
            let what = format!("the check command of stream `{id}`");
            self.check_one_script(cmd, span, &what, r, tree, upstream)?;
        }
        for c in &r.cfg.checks.commands {
            let span =
                r.at.check_commands
                    .get(&c.name)
                    .or_else(|| self.check_commands.get(&c.name))
                    .copied()
                    .unwrap_or(r.at.header);
            let what = format!("the check command `{}` of stream `{id}`", c.name);
            self.check_one_script(&c.run, span, &what, r, tree, upstream)?;
        }
        Ok(())
    }

    /// The script `cmd` runs (see [`script_of`]), for [`Self::check_script`].
    fn check_one_script(
        &self,
        cmd: &str,
        span: At,
        what: &str,
        r: Raw<'_>,
        tree: &BranchTree,
        upstream: &mut dyn FnMut(&str) -> bool,
    ) -> Res<()> {
        let Some((script, direct)) = script_of(cmd) else {
            return Ok(());
        };
        let id = &r.cfg.id;
        let what = what.to_string();
        let shell = format!("or run it through the shell: `command = \"sh {script}\"`");
        let path = Path::new(&script);
        if path.is_absolute() {
            let (why, help) = if !path.exists() {
                (
                    "does not exist",
                    "fix the path, or install the script there".to_string(),
                )
            } else if path.is_dir() {
                (
                    "is a folder",
                    "point the command at a script file".to_string(),
                )
            } else if direct && crate::process::find_executable(&script).is_none() {
                (
                    "is not executable",
                    format!("run `chmod +x {script}`, {shell}"),
                )
            } else {
                return Ok(());
            };
            return Err(self.err(span, format!("{what}: `{script}` {why}"), help));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(self.err(
                span,
                format!("{what}: `{script}` leaves the repository (it has `..`)"),
                "commit the script to the target branch and name it relative to the \
                 repository root (the command runs in the stream's worktree), or give its \
                 absolute path",
            ));
        }
        let key = normal_path(&script);
        if upstream(&key) {
            return Ok(());
        }
        self.link_in_tree(span, &what, &key, tree)?;
        let b = tree.branch();
        let (why, help) = match tree.entry(&key) {
            None => (
                format!(
                    "is not in branch `{b}` (the command runs in the stream's worktree, which \
                     starts from `{b}`)"
                ),
                missing_file_help(&key, id, tree, self.streams),
            ),
            Some(TreeEntry::Folder) => (
                format!("is a folder in branch `{b}`"),
                "point the command at a script file".to_string(),
            ),
            Some(TreeEntry::Other) if direct => (
                format!("is not executable in branch `{b}`"),
                format!(
                    "make it executable and commit that (`chmod +x {key} && git add {key} && git \
                     commit`; git keeps the executable bit), {shell}"
                ),
            ),
            Some(_) => return Ok(()),
        };
        Err(self.err(span, format!("{what}: `{script}` {why}"), help))
    }
}

/// Which streams (by index) write each output path (normalised).
fn writers_of(configs: &[StreamConfig]) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in configs.iter().enumerate() {
        for o in &c.outputs {
            out.entry(normal_path(o)).or_default().push(i);
        }
    }
    out
}

/// How a file `rel` that stream `id` needs can reach its worktree: from
/// the stream that writes it, by committing the copy in the checkout, or
/// by creating it.
fn missing_file_help(rel: &str, id: &str, tree: &BranchTree, streams: &[StreamConfig]) -> String {
    let b = tree.branch();
    if let Some(w) = streams
        .iter()
        .find(|w| w.id != id && w.outputs.iter().any(|o| normal_path(o) == rel))
    {
        let w = &w.id;
        return format!(
            "stream `{w}` writes it: add \"{w}\" to the depends_on of stream `{id}`, so that it \
             starts after `{w}` merged"
        );
    }
    if tree.root().join(rel).exists() {
        return format!(
            "it is in your checkout but not committed to `{b}`, and a stream's worktree starts \
             from `{b}`: commit it (`git add {rel} && git commit`)"
        );
    }
    format!(
        "create it and commit it to `{b}`, fix the path (relative to the repository root), or \
         add the stream that writes it (lists it in `outputs`) to depends_on"
    )
}

/// Shells and interpreters whose first argument is a script file.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "python", "python3", "perl", "ruby", "node",
];

/// The script file a check command runs, and whether it is run directly
/// (so it must be executable): the first word when it is a path
/// (`scripts/check.sh --strict`), or the script given to a shell or an
/// interpreter (`sh scripts/check.sh`), after any `NAME=value` words.
/// `None` otherwise: a bare name (`make`, `test`) is looked up by the shell
/// at run time and may be a builtin, and words with shell syntax (quotes,
/// `$`, globs, redirections) are not second-guessed.
pub(super) fn script_of(cmd: &str) -> Option<(String, bool)> {
    let plain = |w: &str| !w.contains(|c: char| "'\"$`\\(){}<>|;&*?[]~#!=".contains(c));
    let assignment = |w: &str| {
        w.split_once('=')
            .is_some_and(|(n, _)| prompt::valid_name(n))
    };
    let mut words = cmd.split_whitespace().skip_while(|w| assignment(w));
    let first = words.next()?;
    if !plain(first) {
        return None;
    }
    if first.contains('/') {
        return Some((first.to_string(), true));
    }
    if !INTERPRETERS.contains(&first) {
        return None;
    }
    let script = words.next()?;
    (plain(script) && !script.starts_with('-')).then(|| (script.to_string(), false))
}

/// `prompts/retry.md` under `repo_root` (where a retry reads it), when there
/// is one, is UTF-8 text that uses only [`RETRY_PLACEHOLDERS`]: at run time a
/// retry.md that cannot be read or filled is replaced, silently, by one
/// built-in sentence.
fn check_retry_template(repo_root: &Path) -> Res<()> {
    check_own_template(repo_root, prompt::RETRY_FILE, RETRY_PLACEHOLDERS, "a retry")?;
    check_own_template(
        repo_root,
        prompt::RESOLVE_FILE,
        prompt::RESOLVE_PLACEHOLDERS,
        "a resolver's attempt",
    )
}

/// A template of loki's own (`prompts/retry.md`, `prompts/resolve.md`)
/// under `repo_root`, when there is one, is UTF-8 text that uses only
/// `allowed`: at run time one that cannot be filled is replaced, silently,
/// by the built-in text.
fn check_own_template(repo_root: &Path, file: &str, allowed: &[&str], user: &str) -> Res<()> {
    let path = repo_root.join(file);
    let whole = |message: &str, help: String| ConfigError::whole(&path, message, help);
    let bytes = match read_inside(repo_root, Path::new(file), MAX_PROMPT_FILE) {
        Ok(b) => b,
        Err(FileRefusal::Missing) => return Ok(()),
        Err(why) => {
            return Err(whole(
                &format!("{file} {why}"),
                format!(
                    "make it a regular template file in the repository, or remove it to use \
                     the built-in text for {user}"
                ),
            ))
        }
    };
    let text = utf8_text(&path, bytes, file, &format!("save {file} as UTF-8"))?;
    let shown = allowed
        .iter()
        .map(|n| format!("{{{{{n}}}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    for (name, line, col) in prompt::placeholders(&text) {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        let near = suggest(&name, allowed)
            .map(|k| format!("did you mean {{{{{k}}}}}? "))
            .unwrap_or_default();
        return Err(ConfigError {
            file: path,
            line,
            col,
            message: format!("placeholder {{{{{name}}}}} is not filled in {file}"),
            help: format!(
                "{near}{file} may use only {shown}; remove or rename this one (a text for \
                 {user} that cannot be filled would be replaced by the built-in one)"
            ),
        });
    }
    Ok(())
}
