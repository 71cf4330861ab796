//! Pass 1, value by value: each key's value read as the type it must have,
//! with the refusal (at the value) when it is not, and the `[swarm]`,
//! `[agent]` and `[checks]` keys applied to their settings.

use std::ops::Range;
use std::path::{Component, Path};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::{suggest, Res};
use super::parse::Parser;
use super::{
    parse_duration, AgentSettings, CheckSettings, Sandbox, SwarmSettings, BUILTIN_PLACEHOLDERS,
    PERMISSION_MODES, SANDBOXES,
};
use crate::prompt;

pub(super) type Val<'i> = Spanned<DeValue<'i>>;

/// A key of a table with its span and value.
#[derive(Clone)]
pub(super) struct Entry<'a, 'i> {
    pub(super) key: &'a str,
    pub(super) span: Range<usize>,
    pub(super) val: &'a Val<'i>,
}

/// The entries of `t` in file order (toml keeps them sorted by name).
pub(super) fn entries<'a, 'i>(t: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut v: Vec<Entry<'a, 'i>> = t
        .iter()
        .map(|(k, val)| Entry {
            key: k.get_ref().as_ref(),
            span: k.span(),
            val,
        })
        .collect();
    v.sort_by_key(|e| e.span.start);
    v
}

pub(super) fn type_name(v: &Val<'_>) -> &'static str {
    v.get_ref().type_str()
}

fn integer(v: &Val<'_>) -> Option<i128> {
    match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// An integer written with a `-` (also one with too many digits for
/// [`integer`], which says `None` either way).
fn negative(v: &Val<'_>) -> bool {
    matches!(v.get_ref(), DeValue::Integer(i) if i.as_str().starts_with('-'))
}

fn number(v: &Val<'_>) -> Option<f64> {
    match v.get_ref() {
        DeValue::Integer(_) => integer(v).map(|n| n as f64),
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        _ => None,
    }
}

/// The longest duration any key takes.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const DURATION_HELP: &str = "write a duration such as \"40m\", \"1h30m\", \"10s\" or \"500ms\", \
                             or a whole number of seconds";

/// A valid placeholder name close to an invalid one.
pub(super) fn sanitized_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

impl Parser<'_> {
    pub(super) fn table<'a, 'i>(
        &self,
        key: &str,
        v: &'a Val<'i>,
        what: &str,
    ) -> Res<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Ok(t),
            _ => Err(self.err(
                &v.span(),
                format!("`{key}` must be a table, found {}", type_name(v)),
                format!("write it as {what}"),
            )),
        }
    }

    pub(super) fn string(&self, key: &str, v: &Val<'_>) -> Res<String> {
        match v.get_ref() {
            DeValue::String(s) => {
                self.no_nul(key, s, &v.span())?;
                Ok(s.to_string())
            }
            _ => Err(self.err(
                &v.span(),
                format!("`{key}` must be a string, found {}", type_name(v)),
                format!("put the value in quotes: {key} = \"...\""),
            )),
        }
    }

    /// Refuses a NUL byte in a string: no path, argument or environment
    /// variable can hold one, and it would fail only once a worktree exists.
    pub(super) fn no_nul(&self, key: &str, s: &str, span: &Range<usize>) -> Res<()> {
        if s.contains('\0') {
            return Err(self.err(
                span,
                format!("`{key}` contains a NUL byte (\\u0000)"),
                "remove it: paths, arguments and environment variables cannot hold one",
            ));
        }
        Ok(())
    }

    /// A string that must not be empty.
    pub(super) fn text_value(&self, key: &str, v: &Val<'_>) -> Res<String> {
        let s = self.string(key, v)?;
        if s.trim().is_empty() {
            return Err(self.err(
                &v.span(),
                format!("`{key}` must not be empty"),
                format!("give `{key}` a value, or leave the key out to use the default"),
            ));
        }
        Ok(s)
    }

    pub(super) fn boolean(&self, key: &str, v: &Val<'_>) -> Res<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.err(
                &v.span(),
                format!("`{key}` must be true or false, found {}", type_name(v)),
                format!("write `{key} = true` or `{key} = false` (without quotes)"),
            )),
        }
    }

    pub(super) fn pos_int(&self, key: &str, v: &Val<'_>, max: u64, example: &str) -> Res<u64> {
        let help = format!("write a whole number of at least 1, e.g. `{key} = {example}`");
        let found = match v.get_ref() {
            DeValue::Integer(_) => match integer(v) {
                Some(n) if n >= 1 && n <= i128::from(max) => return Ok(n as u64),
                Some(n) if n >= 1 => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}` is too large: at most {max}, found {n}"),
                        help,
                    ))
                }
                Some(n) => n.to_string(),
                None if negative(v) => "a negative integer".to_string(),
                // Too many digits for any integer.
                None => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}` is too large: at most {max}"),
                        help,
                    ))
                }
            },
            _ => type_name(v).to_string(),
        };
        Err(self.err(
            &v.span(),
            format!("`{key}` must be a positive integer, found {found}"),
            help,
        ))
    }

    pub(super) fn money(&self, key: &str, v: &Val<'_>) -> Res<f64> {
        let found = match number(v) {
            Some(f) if f.is_finite() && f >= 0.0 => return Ok(f),
            Some(_) => self.text.get(v.span()).unwrap_or("a number").to_string(),
            None => type_name(v).to_string(),
        };
        Err(self.err(
            &v.span(),
            format!("`{key}` must be a non-negative number of US dollars, found {found}"),
            format!("e.g. `{key} = 5.0`; leave it out for no limit"),
        ))
    }

    /// A duration key's value, within 0 (where `allow_zero`) ..= 365 days.
    pub(super) fn duration(&self, key: &str, v: &Val<'_>, allow_zero: bool) -> Res<Duration> {
        let help = format!("{DURATION_HELP}, e.g. `{key} = \"10m\"`");
        let d = match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Some(d) => d,
                None => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}`: \"{s}\" is not a duration"),
                        help,
                    ))
                }
            },
            DeValue::Integer(_) => match integer(v) {
                Some(n) if n >= 0 => Duration::from_secs(u64::try_from(n).unwrap_or(u64::MAX)),
                Some(n) => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}` must not be negative, found {n}"),
                        help,
                    ));
                }
                // Too many digits for any integer: a negative one says `-`.
                None if negative(v) => {
                    return Err(self.err(&v.span(), format!("`{key}` must not be negative"), help))
                }
                None => Duration::MAX,
            },
            _ => {
                return Err(self.err(
                    &v.span(),
                    format!(
                        "`{key}` must be a duration (a string such as \"40m\") or a number of \
                         seconds, found {}",
                        type_name(v)
                    ),
                    help,
                ))
            }
        };
        if !allow_zero && d.is_zero() {
            return Err(self.err(&v.span(), format!("`{key}` must be longer than zero"), help));
        }
        // A longer wait is a typo, and adding it to the clock would overflow.
        if d > MAX_DURATION {
            return Err(self.err(
                &v.span(),
                format!("`{key}` is too long: at most 365 days"),
                help,
            ));
        }
        Ok(d)
    }

    /// An array of strings, each with its span; empty strings are refused.
    pub(super) fn str_array(&self, key: &str, v: &Val<'_>) -> Res<Vec<(String, Range<usize>)>> {
        let DeValue::Array(a) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                format!(
                    "`{key}` must be an array of strings, found {}",
                    type_name(v)
                ),
                format!("write `{key} = [\"...\", \"...\"]`"),
            ));
        };
        let mut out = Vec::with_capacity(a.len());
        for item in a.iter() {
            match item.get_ref() {
                DeValue::String(s) if s.is_empty() => {
                    return Err(self.err(
                        &item.span(),
                        format!("`{key}` entries must not be empty"),
                        "remove the empty string",
                    ))
                }
                DeValue::String(s) => {
                    self.no_nul(key, s, &item.span())?;
                    out.push((s.to_string(), item.span()))
                }
                _ => {
                    return Err(self.err(
                        &item.span(),
                        format!("`{key}` entries must be strings, found {}", type_name(item)),
                        "put each entry in quotes",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A table of strings: (name, name span, value, value span). With
    /// `lenient`, integers, floats and booleans are taken as their text.
    #[allow(clippy::type_complexity)]
    pub(super) fn str_table(
        &self,
        key: &str,
        v: &Val<'_>,
        lenient: bool,
    ) -> Res<Vec<(String, Range<usize>, String, Range<usize>)>> {
        let t = self.table(key, v, &format!("`{key} = {{ NAME = \"value\" }}`"))?;
        let mut out = Vec::new();
        for e in entries(t) {
            let value = match e.val.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(_) if lenient => {
                    integer(e.val).map(|n| n.to_string()).unwrap_or_default()
                }
                DeValue::Float(f) if lenient => f.as_str().to_string(),
                DeValue::Boolean(b) if lenient => b.to_string(),
                _ => {
                    let what = if lenient {
                        "a string, number or boolean"
                    } else {
                        "a string"
                    };
                    return Err(self.err(
                        &e.val.span(),
                        format!(
                            "`{key}.{}` must be {what}, found {}",
                            e.key,
                            type_name(e.val)
                        ),
                        format!("write `{} = \"...\"` inside `{key}`", e.key),
                    ));
                }
            };
            self.no_nul(&format!("{key}.{}", e.key.escape_default()), e.key, &e.span)?;
            self.no_nul(
                &format!("{key}.{}", e.key.escape_default()),
                &value,
                &e.val.span(),
            )?;
            out.push((e.key.to_string(), e.span.clone(), value, e.val.span()));
        }
        Ok(out)
    }

    pub(super) fn apply_swarm(&self, s: &mut SwarmSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "target" => {
                let t = self.text_value(key, v)?;
                if !crate::git::valid_branch_name(&t) {
                    return Err(self.err(
                        &v.span(),
                        format!("`target` \"{t}\" is not a valid branch name"),
                        "name an existing branch such as \"main\", or leave `target` out to use \
                         the branch checked out in the main worktree",
                    ));
                }
                if t.starts_with(crate::model::paths::BRANCH_PREFIX) {
                    return Err(self.err(
                        &v.span(),
                        format!(
                            "`target` \"{t}\" is a stream's branch: loki makes `loki/<id>` for each stream and deletes it after the merge"
                        ),
                        "merge into a branch of your own, such as \"main\"",
                    ));
                }
                s.target = Some(t);
                s.target_at = Some(self.lines.line_col(self.text, v.span().start));
            }
            "max_parallel" => {
                let n = self.pos_int(key, v, u64::from(u32::MAX), "4")?;
                s.max_parallel = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "max_budget_usd" => s.max_budget_usd = Some(self.money(key, v)?),
            "spawn_interval" => s.spawn_interval = self.duration(key, v, true)?,
            "max_wait" => s.max_wait = self.duration(key, v, true)?,
            "lease" => {
                let d = self.duration(key, v, false)?;
                if d < std::time::Duration::from_secs(1) {
                    return Err(self.err(
                        &v.span(),
                        format!(
                            "`lease` must be at least 1s, found {}",
                            humantime::format_duration(d)
                        ),
                        "write e.g. `lease = \"2m\"`: a claim is renewed every third of it, and a \
                         machine silent for longer than the lease and half again loses its streams",
                    ));
                }
                s.lease = d;
            }
            "remote" => {
                let r = self.text_value(key, v)?;
                if !crate::git::valid_remote_name(&r) {
                    return Err(self.err(
                        &v.span(),
                        format!(
                            "`remote` \"{}\" is not a valid git remote name",
                            r.escape_default()
                        ),
                        "name a remote of this clone, such as \"origin\" (see `git remote -v`)",
                    ));
                }
                s.remote = Some(r);
            }
            "max_validators" => {
                let n = self.pos_int(key, v, u64::from(u32::MAX), "4")?;
                s.max_validators = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            "pause_at_utilization" => {
                let u = number(v)
                    .filter(|u| (0.0..=1.0).contains(u))
                    .ok_or_else(|| {
                        self.err(
                            &v.span(),
                            format!(
                                "`pause_at_utilization` must be a number from 0 to 1, found {}",
                                type_name(v)
                            ),
                            "write e.g. `pause_at_utilization = 0.9`: at 90% of a usage window, \
                         start no new attempt until it resets",
                        )
                    })?;
                s.pause_at_utilization = Some(u);
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn apply_merge(&self, m: &mut super::MergeSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "resolve" => {
                m.resolve =
                    match self.string(key, v)?.as_str() {
                        "agent" => Some(true),
                        "none" => Some(false),
                        other => return Err(self.err(
                            &v.span(),
                            format!("`resolve` must be \"agent\" or \"none\"; found \"{other}\""),
                            "\"agent\": a resolver attempt of the stream's agent resolves a merge \
                             conflict and is checked again; \"none\": a conflict waits for you",
                        )),
                    }
            }
            "max_resolve_attempts" => {
                m.max_resolve_attempts =
                    u32::try_from(self.pos_int(key, v, u64::from(u32::MAX), "1")?).unwrap_or(1)
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn apply_agent(&self, a: &mut AgentSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "command" => a.command = self.text_value(key, v)?,
            "args" => {
                a.args = self
                    .str_array(key, v)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "model" => a.model = self.text_value(key, v)?,
            "permission_mode" => {
                let m = self.string(key, v)?;
                if !PERMISSION_MODES.contains(&m.as_str()) {
                    let near = suggest(&m, PERMISSION_MODES)
                        .map(|s| format!("did you mean \"{s}\"? "))
                        .unwrap_or_default();
                    return Err(self.err(
                        &v.span(),
                        format!(
                            "`permission_mode` must be one of {}; found \"{m}\"",
                            PERMISSION_MODES.join(", ")
                        ),
                        format!(
                            "{near}\"acceptEdits\" (the default) lets the agent edit files; \
                             \"bypassPermissions\" skips every permission check"
                        ),
                    ));
                }
                a.permission_mode = m;
            }
            "timeout" => a.timeout = self.duration(key, v, false)?,
            "idle_timeout" => a.idle_timeout = self.duration(key, v, false)?,
            "max_attempts" => {
                a.max_attempts = u32::try_from(self.pos_int(key, v, u64::from(u32::MAX), "3")?)
                    .unwrap_or(u32::MAX)
            }
            "env" => {
                for (name, span, value, _) in self.str_table(key, v, false)? {
                    if name.is_empty() || name.contains(['=', '\0']) {
                        return Err(self.err(
                            &span,
                            format!("`env`: \"{name}\" is not a valid environment variable name"),
                            "use letters, digits and `_`, e.g. `IS_SANDBOX = \"1\"`",
                        ));
                    }
                    a.env.insert(name, value);
                }
            }
            "kill_grace" => a.kill_grace = self.duration(key, v, true)?,
            "resume" => a.resume = self.boolean(key, v)?,
            "max_budget_usd" => a.max_budget_usd = Some(self.money(key, v)?),
            "agent_type" => {
                let name = self.string(key, v)?;
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && !name.starts_with(['-', '.'])
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    return Err(self.err(
                        &v.span(),
                        format!("`agent_type` \"{name}\" is not a persona name"),
                        "name a claude persona by its file's stem, e.g. `agent_type = \
                         \"character-designer\"` for .claude/agents/character-designer.md \
                         (letters, digits, `-`, `_` and `.`)",
                    ));
                }
                a.agent_type = Some(name);
            }
            "sandbox" => {
                a.sandbox = match self.string(key, v)?.as_str() {
                    "none" => Sandbox::None,
                    "bwrap" => Sandbox::Bwrap,
                    other => {
                        let near = suggest(other, SANDBOXES)
                            .map(|s| format!("did you mean \"{s}\"? "))
                            .unwrap_or_default();
                        return Err(self.err(
                            &v.span(),
                            format!(
                                "`sandbox` must be one of {}; found \"{other}\"",
                                SANDBOXES.join(", ")
                            ),
                            format!(
                                "{near}\"bwrap\" runs each agent under bubblewrap (the \
                                 filesystem read-only but for its worktree); \"none\" (the \
                                 default) does not"
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn apply_check(&self, c: &mut CheckSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "words" => c.words = Some(self.words(v)?),
            "word_tolerance" => match number(v) {
                Some(f) if (0.0..=1.0).contains(&f) => c.word_tolerance = f,
                n => {
                    let found = match n {
                        Some(_) => self.text.get(v.span()).unwrap_or("a number").to_string(),
                        None => type_name(v).to_string(),
                    };
                    return Err(self.err(
                        &v.span(),
                        format!("`word_tolerance` must be a number from 0 to 1, found {found}"),
                        "it is a fraction: 0.1 lets a word count up to 10% outside `words` \
                         pass with a warning",
                    ));
                }
            },
            "require" => {
                c.require = self
                    .str_array(key, v)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "forbid" => {
                c.forbid = self
                    .str_array(key, v)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "canonical" => c.canonical = self.boolean(key, v)?,
            "command" => c.command = Some(self.text_value(key, v)?),
            "commands" => {
                c.commands = self
                    .check_commands(v)?
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect()
            }
            "command_timeout" => c.command_timeout = self.duration(key, v, false)?,
            "approve" => c.approve = self.boolean(key, v)?,
            "validators" => {
                c.validators = Vec::new();
                for (name, _) in self.str_array(key, v)? {
                    if !c.validators.contains(&name) {
                        c.validators.push(name);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `[checks.commands]`: name → `"run"` or `{ run, timeout, blocking }`,
    /// each with the span of its command.
    pub(super) fn check_commands(
        &self,
        v: &Val<'_>,
    ) -> Res<Vec<(super::CheckCommand, Range<usize>)>> {
        let example = "`[checks.commands]` with `lint = \"scripts/lint.sh\"` or `style = { run = \
                       \"scripts/style.sh\", timeout = \"2m\", blocking = false }`";
        let t = self.table("commands", v, example)?;
        let mut out = Vec::new();
        for e in entries(t) {
            let name = e.key.to_string();
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(self.err(
                    &e.span,
                    format!(
                        "`commands`: \"{}\" is not a check name",
                        name.escape_default()
                    ),
                    "name each check command with letters, digits, `-` and `_`, e.g. `lint`",
                ));
            }
            let key = format!("commands.{name}");
            match e.val.get_ref() {
                DeValue::String(_) => {
                    let run = self.text_value(&key, e.val)?;
                    let cmd = super::CheckCommand {
                        name,
                        run,
                        timeout: None,
                        blocking: true,
                    };
                    out.push((cmd, e.val.span()));
                }
                DeValue::Table(sub) => {
                    let mut run = None;
                    let mut timeout = None;
                    let mut blocking = true;
                    for x in entries(sub) {
                        match x.key {
                            "run" => run = Some((self.text_value(&key, x.val)?, x.val.span())),
                            "timeout" => timeout = Some(self.duration("timeout", x.val, false)?),
                            "blocking" => blocking = self.boolean("blocking", x.val)?,
                            other => {
                                return Err(self.err(
                                    &x.span,
                                    format!("unknown key `{other}` in `{key}`"),
                                    "a check command is `{ run = \"...\", timeout = \"5m\", \
                                     blocking = true }` (only `run` is needed)",
                                ))
                            }
                        }
                    }
                    let Some((run, span)) = run else {
                        return Err(self.err(
                            &e.span,
                            format!("`{key}` has no `run`"),
                            "add `run = \"scripts/check.sh\"`: the command, run through `sh -c` \
                             in the worktree",
                        ));
                    };
                    let cmd = super::CheckCommand {
                        name,
                        run,
                        timeout,
                        blocking,
                    };
                    out.push((cmd, span));
                }
                _ => {
                    return Err(self.err(
                        &e.val.span(),
                        format!(
                            "`{key}` must be a string or a table, found {}",
                            type_name(e.val)
                        ),
                        format!("write {example}"),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn words(&self, v: &Val<'_>) -> Res<(u64, u64)> {
        let help = "write `words = [min, max]`, e.g. `words = [1500, 3000]`: every output must \
                    have between 1500 and 3000 words";
        let DeValue::Array(a) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                format!(
                    "`words` must be [min, max], two whole numbers, found {}",
                    type_name(v)
                ),
                help,
            ));
        };
        if a.len() != 2 {
            return Err(self.err(
                &v.span(),
                format!(
                    "`words` must be [min, max], two whole numbers, found {} entries",
                    a.len()
                ),
                help,
            ));
        }
        let mut nums = [0u64; 2];
        for (slot, item) in nums.iter_mut().zip(a.iter()) {
            match integer(item) {
                Some(n) if n >= 0 => *slot = u64::try_from(n).unwrap_or(u64::MAX),
                // Too many digits for any integer: more words than any text has.
                None if matches!(item.get_ref(), DeValue::Integer(_)) && !negative(item) => {
                    *slot = u64::MAX
                }
                n => {
                    let found = match n {
                        Some(n) => n.to_string(),
                        None => type_name(item).to_string(),
                    };
                    return Err(self.err(
                        &item.span(),
                        format!("`words` entries must be non-negative integers, found {found}"),
                        help,
                    ));
                }
            }
        }
        if nums[0] > nums[1] {
            return Err(self.err(
                &v.span(),
                format!(
                    "`words` minimum {} is greater than maximum {}",
                    nums[0], nums[1]
                ),
                "write [min, max] with min ≤ max",
            ));
        }
        Ok((nums[0], nums[1]))
    }

    /// Refuses a path that is not a plain relative path inside the worktree.
    pub(super) fn rel_path(&self, label: &str, p: &str, span: &Range<usize>) -> Res<()> {
        let path = Path::new(p);
        let normal: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        let why = if path.has_root() {
            "must be relative to the repository root, not absolute"
        } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
            "must not contain `..`"
        } else if normal.is_empty() {
            "must name a file"
        } else if p.ends_with('/') || p.ends_with("/.") {
            "names a folder: it must name a file"
        } else if normal[0].eq_ignore_ascii_case(".loki") {
            "must not be under `.loki/` (loki's own folder)"
        } else if normal.iter().any(|c| c.eq_ignore_ascii_case(".git")) {
            // In any letter case: on a case-insensitive disk `.GIT` is `.git`,
            // and git never commits either, so the file would never merge.
            "must not be inside `.git` (in any letter case)"
        } else {
            return Ok(());
        };
        Err(self.err(
            span,
            format!("`{label}`: path \"{p}\" {why}"),
            "write a path relative to the repository root (the worktree root), e.g. \
             \"chapters/ch01.md\"",
        ))
    }

    pub(super) fn placeholder_name(&self, key: &str, name: &str, span: &Range<usize>) -> Res<()> {
        if !prompt::valid_name(name) {
            let s = sanitized_name(name);
            return Err(self.err(
                span,
                format!("`{key}`: \"{name}\" is not a valid placeholder name"),
                format!(
                    "placeholder names are letters, digits and `_`, not starting with a digit, \
                     e.g. `{s}`, used as {{{{{s}}}}} in the template"
                ),
            ));
        }
        if BUILTIN_PLACEHOLDERS.contains(&name) {
            return Err(self.err(
                span,
                format!("`{key}`: {{{{{name}}}}} is a built-in placeholder that loki fills itself"),
                format!(
                    "rename it; the built-ins are {}",
                    BUILTIN_PLACEHOLDERS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}
