//! Pass 1: the swarm file's text to a typed [`SwarmFile`], with the
//! positions pass 2 points at. Touches no disk: unknown keys, values of the
//! wrong type or range, bad or duplicate ids, unknown `depends_on` ids and
//! cycles are all refused from the text alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::diag::{suggest, At, Res};
use super::fanout::{self, FANOUT_PLACEHOLDERS};
use super::values::{entries, type_name, Entry, Val};
use super::{
    AgentSettings, CheckSettings, ConfigError, ForEach, StreamConfig, SwarmFile, SwarmSettings,
    Template,
};
use crate::model::id::valid_stream_id;
use crate::model::StreamId;
use crate::plan;

/// Pass 1's result: the typed swarm file, and where in the text the things
/// pass 2 checks against the repository were written.
pub(super) struct Parsed {
    pub(super) swarm: SwarmFile,
    /// The swarm file's path as the caller gave it: refusals name it so.
    pub(super) file: PathBuf,
    /// One per stream, in stream order.
    pub(super) at: Vec<StreamAt>,
    /// The `command` value in `[checks]`.
    pub(super) check_command: Option<At>,
    /// Each named command's value in `[checks.commands]`.
    pub(super) check_commands: BTreeMap<String, At>,
    /// Each validator's `prompt` value.
    pub(super) validator_prompts: BTreeMap<String, At>,
}

/// Where a stream's parts stand in the swarm file.
#[derive(Clone)]
pub(super) struct StreamAt {
    /// The stream's table.
    pub(super) header: At,
    pub(super) prompt: At,
    /// Input name → its path's value.
    pub(super) inputs: BTreeMap<String, At>,
    /// Each entry of `outputs`, in order.
    pub(super) outputs: Vec<At>,
    /// The stream's own check `command` value (in [streams.checks]).
    pub(super) check_command: Option<At>,
    /// Its own `[streams.checks.commands]` values, by name.
    pub(super) check_commands: BTreeMap<String, At>,
}

pub(super) const TOP_KEYS: &[&str] =
    &["swarm", "agent", "checks", "merge", "validators", "streams"];
/// Keys of a `[validators.<name>]` table besides every `[agent]` key.
pub(super) const VALIDATOR_KEYS: &[&str] = &["prompt", "blocking"];
/// Keys of `[merge]`.
pub(super) const MERGE_KEYS: &[&str] = &["resolve", "max_resolve_attempts"];
pub(super) const SWARM_KEYS: &[&str] = &[
    "target",
    "max_parallel",
    "max_budget_usd",
    "spawn_interval",
    "pause_at_utilization",
    "max_wait",
    "max_validators",
    "remote",
    "lease",
];
pub(super) const AGENT_KEYS: &[&str] = &[
    "command",
    "args",
    "model",
    "permission_mode",
    "timeout",
    "idle_timeout",
    "max_attempts",
    "env",
    "kill_grace",
    "resume",
    "max_budget_usd",
    "sandbox",
    "agent_type",
];
pub(super) const CHECK_KEYS: &[&str] = &[
    "words",
    "word_tolerance",
    "require",
    "forbid",
    "canonical",
    "command",
    "commands",
    "command_timeout",
    "approve",
    "validators",
];
pub(super) const STREAM_KEYS: &[&str] = &[
    "id",
    "prompt",
    "vars",
    "inputs",
    "outputs",
    "depends_on",
    "approve",
    "agent",
    "checks",
    "for_each",
    "allow_empty",
    "validation_report",
];
/// Keys of a `for_each` table: one source, and `marker` with `sections`.
pub(super) const FOR_EACH_KEYS: &[&str] = &["sections", "marker", "glob", "list"];

const MINIMAL_STREAM: &str = "add at least one stream, for example:\n\n    [[streams]]\n    \
                              id = \"ch01\"\n    prompt = \"prompts/chapter.md\"\n    \
                              outputs = [\"chapters/ch01.md\"]";

/// Parses swarm-file text; `path` is used for messages and, made absolute,
/// for [`SwarmFile::path`] and [`SwarmFile::root`].
pub(super) fn parse(text: &str, path: &Path) -> Res<Parsed> {
    Parser {
        text,
        file: path,
        lines: super::diag::LineIndex::new(text),
    }
    .parse()
}

/// Which table a key stands in, for messages and the list of valid keys.
#[derive(Clone, Copy)]
enum Section<'a> {
    Top,
    Swarm,
    Merge,
    Agent,
    Checks,
    Stream(&'a str),
    StreamAgent(&'a str),
    StreamChecks(&'a str),
    Validator(&'a str),
}

impl Section<'_> {
    fn label(&self) -> String {
        match self {
            Section::Top => "the top level of the swarm file".into(),
            Section::Swarm => "[swarm]".into(),
            Section::Merge => "[merge]".into(),
            Section::Agent => "[agent]".into(),
            Section::Checks => "[checks]".into(),
            Section::Stream(id) => format!("[[streams]] `{id}`"),
            Section::StreamAgent(id) => format!("[streams.agent] of stream `{id}`"),
            Section::StreamChecks(id) => format!("[streams.checks] of stream `{id}`"),
            Section::Validator(name) => format!("[validators.{name}]"),
        }
    }

    fn valid(&self) -> Vec<&'static str> {
        match self {
            Section::Top => TOP_KEYS.to_vec(),
            Section::Swarm => SWARM_KEYS.to_vec(),
            Section::Merge => MERGE_KEYS.to_vec(),
            Section::Agent | Section::StreamAgent(_) => AGENT_KEYS.to_vec(),
            Section::Checks | Section::StreamChecks(_) => CHECK_KEYS.to_vec(),
            Section::Validator(_) => {
                let mut v = VALIDATOR_KEYS.to_vec();
                v.extend(AGENT_KEYS);
                v
            }
            Section::Stream(_) => {
                let mut v = STREAM_KEYS.to_vec();
                v.extend(AGENT_KEYS.iter().filter(|k| !STREAM_KEYS.contains(k)));
                v
            }
        }
    }

    /// Where a key that is valid elsewhere belongs.
    fn hint(&self, key: &str) -> Option<String> {
        const STREAM: &str = "a [[streams]] table";
        const ITSELF: &str = "the [[streams]] table itself (keys below a [streams.…] header \
                              belong to that sub-table: move it above the header)";
        let homes: &[(&[&str], &str)] = match self {
            Section::Top => &[
                (SWARM_KEYS, "[swarm]"),
                (AGENT_KEYS, "[agent]"),
                (CHECK_KEYS, "[checks]"),
                (MERGE_KEYS, "[merge]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Swarm | Section::Merge => &[
                (SWARM_KEYS, "[swarm]"),
                (AGENT_KEYS, "[agent]"),
                (CHECK_KEYS, "[checks]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Agent => &[
                (SWARM_KEYS, "[swarm]"),
                (CHECK_KEYS, "[checks]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Checks => &[
                (SWARM_KEYS, "[swarm]"),
                (AGENT_KEYS, "[agent]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Stream(_) => &[
                (
                    CHECK_KEYS,
                    "[streams.checks] (below this stream's [[streams]] table)",
                ),
                (SWARM_KEYS, "[swarm]"),
            ],
            Section::StreamAgent(_) => &[
                (STREAM_KEYS, ITSELF),
                (CHECK_KEYS, "[streams.checks]"),
                (SWARM_KEYS, "[swarm]"),
            ],
            Section::StreamChecks(_) => &[
                (STREAM_KEYS, ITSELF),
                (AGENT_KEYS, ITSELF),
                (SWARM_KEYS, "[swarm]"),
            ],
            Section::Validator(_) => &[
                (CHECK_KEYS, "[checks] or [streams.checks]"),
                (SWARM_KEYS, "[swarm]"),
                (STREAM_KEYS, STREAM),
            ],
        };
        homes
            .iter()
            .find(|(keys, _)| keys.contains(&key))
            .map(|(_, place)| format!("`{key}` belongs in {place}. "))
    }
}

/// A stream as parsed, with the spans later checks point at.
struct RawStream {
    cfg: StreamConfig,
    header: Range<usize>,
    prompt_span: Range<usize>,
    deps: Vec<(String, Range<usize>)>,
    /// Input name → the span of its path.
    input_spans: BTreeMap<String, Range<usize>>,
    /// The span of each entry of `cfg.outputs`, in order.
    output_spans: Vec<Range<usize>>,
    /// The stream's own `command` key (directly or in [streams.agent]).
    command_key: Option<Range<usize>>,
    /// The stream's own check `command` value (in [streams.checks]).
    check_command: Option<Range<usize>>,
    /// Its own named check commands' values.
    check_commands: BTreeMap<String, Range<usize>>,
    /// `for_each`, `allow_empty` and the span of the `for_each` value.
    template: Option<(ForEach, bool, Range<usize>)>,
    /// Its own `validators` names with their spans (in [streams.checks]).
    validators_at: Vec<(String, Range<usize>)>,
}

/// Spans in `[agent]` and `[checks]` that stream refusals fall back on when
/// the stream does not set the key itself.
#[derive(Default)]
struct BaseSpans {
    /// The `agent` key of the `[agent]` header.
    agent: Option<Range<usize>>,
    /// The `command` key in `[agent]`.
    agent_command: Option<Range<usize>>,
    /// The `command` value in `[checks]`.
    check_command: Option<Range<usize>>,
    /// The named commands' values in `[checks.commands]`.
    check_commands: BTreeMap<String, Range<usize>>,
    /// The `validators` names in `[checks]`, with their spans.
    validators: Vec<(String, Range<usize>)>,
}

pub(super) struct Parser<'t> {
    pub(super) text: &'t str,
    pub(super) file: &'t Path,
    pub(super) lines: super::diag::LineIndex,
}

impl Parser<'_> {
    pub(super) fn err(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = self.lines.line_col(self.text, span.start);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
            help: help.into(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.lines.line_col(self.text, span.start).0
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().trim();
        let mut message = format!("invalid TOML: {msg}");
        let help = if msg.contains("duplicate key") {
            if let Some(key) = e.span().and_then(|s| self.text.get(s)) {
                if !key.is_empty() {
                    message = format!("invalid TOML: duplicate key `{key}`");
                }
            }
            "a key may appear only once in a table, and a [table] header only once; remove or \
             rename the repeated one (each stream is its own [[streams]] table, with double \
             brackets)"
        } else if msg.contains("quoted") {
            "put text values in quotes: key = \"value\""
        } else {
            "fix the TOML syntax here (see https://toml.io)"
        };
        match e.span() {
            Some(s) => self.err(&s, message, help),
            None => ConfigError {
                file: self.file.to_path_buf(),
                line: 0,
                col: 0,
                message,
                help: help.into(),
            },
        }
    }

    fn check_keys(&self, es: &[Entry<'_, '_>], section: Section<'_>) -> Res<()> {
        let valid = section.valid();
        for e in es {
            if valid.contains(&e.key) {
                continue;
            }
            let label = section.label();
            let mut help = section
                .hint(e.key)
                .or_else(|| suggest(e.key, &valid).map(|s| format!("did you mean `{s}`? ")))
                .unwrap_or_default();
            help.push_str(&format!("valid keys in {label}: {}", valid.join(", ")));
            return Err(self.err(&e.span, format!("unknown key `{}` in {label}", e.key), help));
        }
        Ok(())
    }
    fn stream(
        &self,
        n: usize,
        v: &Val<'_>,
        base_agent: &AgentSettings,
        base_checks: &CheckSettings,
        ids: &mut HashMap<String, Range<usize>>,
    ) -> Res<RawStream> {
        let header = v.span();
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.err(
                &header,
                format!("each stream must be a table, found {}", type_name(v)),
                "write each stream as a [[streams]] table",
            ));
        };
        let es = entries(t);
        let Some(id_e) = es.iter().find(|e| e.key == "id") else {
            return Err(self.err(
                &header,
                format!("stream #{n} has no `id`"),
                "add `id = \"...\"`: 1 to 64 lowercase letters, digits, `.`, `_` or `-`, e.g. \
                 `id = \"ch01\"` (it names the branch loki/<id>)",
            ));
        };
        let raw_id = self.string("id", id_e.val)?;
        let Ok(id) = StreamId::parse(&raw_id) else {
            let id = raw_id;
            let mut help = "ids are 1 to 64 characters: lowercase letters, digits, `.`, `_` and \
                            `-`, starting with a letter or digit, without `..` and not ending \
                            in `.` or `.lock` (the id names the branch loki/<id>)"
                .to_string();
            if let Some(s) = sanitized_id(&id) {
                help.push_str(&format!("; try `{s}`"));
            }
            return Err(self.err(&id_e.val.span(), format!("invalid stream id `{id}`"), help));
        };
        if let Some(first) = ids.get(id.as_str()) {
            return Err(self.err(
                &id_e.val.span(),
                format!(
                    "duplicate stream id `{id}` (first used at line {})",
                    self.line(first)
                ),
                "every stream needs its own id (it names the branch loki/<id>): rename one of \
                 them",
            ));
        }
        ids.insert(id.to_string(), id_e.val.span());
        self.check_keys(&es, Section::Stream(&id))?;

        let mut prompt_path: Option<(PathBuf, Range<usize>)> = None;
        let mut vars = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        let mut input_keys: Vec<(String, Range<usize>)> = Vec::new();
        let mut input_spans = BTreeMap::new();
        let mut outputs: Vec<String> = Vec::new();
        let mut output_spans: Vec<Range<usize>> = Vec::new();
        let mut outputs_span: Option<Range<usize>> = None;
        let mut deps: Vec<(String, Range<usize>)> = Vec::new();
        let mut var_spans: Vec<(String, Range<usize>, Range<usize>)> = Vec::new();
        let mut for_each: Option<(ForEach, Range<usize>)> = None;
        let mut allow_empty: Option<(bool, Range<usize>)> = None;
        let mut validation_report: Option<String> = None;
        let mut agent_entries = Vec::new();
        let mut check_entries = Vec::new();
        for e in &es {
            match e.key {
                "id" => {}
                "prompt" => {
                    prompt_path = Some((
                        PathBuf::from(self.text_value("prompt", e.val)?),
                        e.val.span(),
                    ))
                }
                "vars" => {
                    for (name, span, value, vspan) in self.str_table("vars", e.val, true)? {
                        self.placeholder_name("vars", &name, &span)?;
                        var_spans.push((name.clone(), span, vspan));
                        vars.insert(name, value);
                    }
                }
                "for_each" => for_each = Some((self.for_each(e.val)?, e.val.span())),
                "allow_empty" => {
                    allow_empty = Some((self.boolean("allow_empty", e.val)?, e.span.clone()))
                }
                "inputs" => {
                    for (name, span, value, vspan) in self.str_table("inputs", e.val, false)? {
                        self.placeholder_name("inputs", &name, &span)?;
                        self.rel_path(&format!("inputs.{name}"), &value, &vspan)?;
                        input_keys.push((name.clone(), span));
                        input_spans.insert(name.clone(), vspan);
                        inputs.insert(name, value);
                    }
                }
                "outputs" => {
                    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
                    for (p, span) in self.str_array("outputs", e.val)? {
                        self.rel_path("outputs", &p, &span)?;
                        let key = normal_path(&p);
                        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                            let (line, col) = self.lines.line_col(self.text, first.start);
                            return Err(self.err(
                                &span,
                                format!(
                                    "`outputs`: \"{p}\" is listed twice for stream `{id}` \
                                     (first at line {line}, column {col})"
                                ),
                                "remove the repeated entry: each output is one file, listed once",
                            ));
                        }
                        seen.push((key, span.clone()));
                        output_spans.push(span);
                        outputs.push(p);
                    }
                    outputs_span = Some(e.val.span());
                }
                "depends_on" => {
                    for (d, span) in self.str_array("depends_on", e.val)? {
                        if !deps.iter().any(|(x, _)| *x == d) {
                            deps.push((d, span));
                        }
                    }
                }
                "approve" => check_entries.push(e.clone()),
                "validation_report" => {
                    let p = self.text_value("validation_report", e.val)?;
                    self.rel_path("validation_report", &p, &e.val.span())?;
                    validation_report = Some(p);
                }
                "agent" => {
                    let t = self.table("agent", e.val, "an [streams.agent] table")?;
                    let sub = entries(t);
                    self.check_keys(&sub, Section::StreamAgent(&id))?;
                    agent_entries.extend(sub);
                }
                "checks" => {
                    let t = self.table("checks", e.val, "a [streams.checks] table")?;
                    let sub = entries(t);
                    self.check_keys(&sub, Section::StreamChecks(&id))?;
                    check_entries.extend(sub);
                }
                _ => agent_entries.push(e.clone()),
            }
        }
        for (name, span) in &input_keys {
            if vars.contains_key(name) {
                return Err(self.err(
                    span,
                    format!("{{{{{name}}}}} is both a var and an input of stream `{id}`"),
                    "rename one of them: a placeholder is filled either by a var or by an input",
                ));
            }
        }
        let template = match (for_each, allow_empty) {
            (None, Some((_, span))) => {
                return Err(self.err(
                    &span,
                    format!("`allow_empty` is set for stream `{id}`, which has no `for_each`"),
                    "`allow_empty = true` lets a fan-out find no item; remove it, or add \
                     `for_each` to make this stream a template",
                ))
            }
            (None, None) => None,
            (Some((fe, span)), allow) => Some((fe, allow.is_some_and(|(a, _)| a), span)),
        };
        self.check_fanout_names(
            &id,
            template.as_ref().map(|(fe, _, _)| fe),
            &var_spans,
            &vars,
            &input_keys,
            &inputs,
            &input_spans,
            &outputs,
            &output_spans,
            &deps,
        )?;
        let Some((prompt_path, prompt_span)) = prompt_path else {
            return Err(self.err(
                &header,
                format!("stream `{id}` has no `prompt`"),
                format!(
                    "add `prompt = \"prompts/{id}.md\"`: a template file, relative to the swarm \
                     file's folder"
                ),
            ));
        };

        let mut agent = base_agent.clone();
        let mut command_key = None;
        for e in self.once_each(agent_entries, &id, "[streams.agent]")? {
            self.apply_agent(&mut agent, &e)?;
            if e.key == "command" {
                command_key = Some(e.span.clone());
            }
        }
        let mut checks = base_checks.clone();
        let mut check_command = None;
        let mut check_commands = BTreeMap::new();
        let mut validators_at = Vec::new();
        for e in self.once_each(check_entries, &id, "[streams.checks]")? {
            self.apply_check(&mut checks, &e)?;
            if e.key == "validators" {
                validators_at = self.str_array("validators", e.val)?;
            }
            if e.key == "command" {
                check_command = Some(e.val.span());
            }
            if e.key == "commands" {
                for (c, span) in self.check_commands(e.val)? {
                    check_commands.insert(c.name, span);
                }
            }
        }
        if outputs.is_empty() && checks.require.iter().any(|t| !t.trim().is_empty()) {
            // `require` terms are looked for in the outputs only: with none,
            // every attempt would fail however good the work.
            let span = outputs_span.clone().unwrap_or_else(|| header.clone());
            return Err(self.err(
                &span,
                format!(
                    "stream `{id}` has no outputs, but `require` terms are looked for only in \
                     outputs: every attempt would fail"
                ),
                format!(
                    "list the files the stream writes in `outputs = [\"...\"]`, or set \
                     `require = []` in its [streams.checks] (it requires {})",
                    checks
                        .require
                        .iter()
                        .map(|t| format!("\"{t}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(RawStream {
            cfg: StreamConfig {
                id,
                prompt: prompt_path,
                vars,
                inputs,
                outputs,
                depends_on: deps.iter().map(|(d, _)| d.clone()).collect(),
                agent,
                checks,
                template: None,
                validation_report,
            },
            header,
            prompt_span,
            deps,
            input_spans,
            output_spans,
            command_key,
            check_command,
            check_commands,
            template,
            validators_at,
        })
    }

    /// `[validators.<name>]` tables: a `prompt`, `blocking`, and any
    /// `[agent]` key over the swarm's `[agent]`.
    fn validators(
        &self,
        v: &Val<'_>,
        base_agent: &AgentSettings,
    ) -> Res<(BTreeMap<String, super::Validator>, BTreeMap<String, At>)> {
        let example = "a table per validator, e.g. `[validators.canon-guardian]` with `prompt = \
                       \"prompts/validators/canon.md\"`";
        let t = self.table("validators", v, example)?;
        let mut out = BTreeMap::new();
        let mut prompts = BTreeMap::new();
        for e in entries(t) {
            let name = e.key.to_string();
            if !valid_stream_id(&name) {
                return Err(self.err(
                    &e.span,
                    format!("\"{}\" is not a validator name", name.escape_default()),
                    "name a validator like a stream: 1 to 64 lowercase letters, digits, `.`, `_` \
                     or `-`, e.g. `[validators.canon-guardian]`",
                ));
            }
            let sub = self.table(&format!("validators.{name}"), e.val, example)?;
            let es = entries(sub);
            self.check_keys(&es, Section::Validator(&name))?;
            let mut agent = base_agent.clone();
            let mut prompt = None;
            let mut blocking = true;
            // Where a refusal of its command points: that key, else the table.
            let mut at = self.lines.line_col(self.text, e.span.start);
            for x in &es {
                if x.key == "command" {
                    at = self.lines.line_col(self.text, x.val.span().start);
                }
                match x.key {
                    "prompt" => {
                        prompt = Some(PathBuf::from(self.text_value("prompt", x.val)?));
                        let at = self.lines.line_col(self.text, x.val.span().start);
                        prompts.insert(name.clone(), at);
                    }
                    "blocking" => blocking = self.boolean("blocking", x.val)?,
                    _ => self.apply_agent(&mut agent, x)?,
                }
            }
            let Some(prompt) = prompt else {
                return Err(self.err(
                    &e.span,
                    format!("validator `{name}` has no `prompt`"),
                    format!(
                        "add `prompt = \"prompts/validators/{name}.md\"`: the reviewer's \
                         instructions, relative to the swarm file's folder"
                    ),
                ));
            };
            out.insert(
                name.clone(),
                super::Validator {
                    name,
                    prompt,
                    blocking,
                    agent,
                    at,
                },
            );
        }
        Ok((out, prompts))
    }

    /// Every name in a `validators` list is a `[validators.<name>]` table.
    fn known_validators(
        &self,
        names: &[(String, Range<usize>)],
        validators: &BTreeMap<String, super::Validator>,
    ) -> Res<()> {
        for (name, span) in names {
            if validators.contains_key(name) {
                continue;
            }
            let known: Vec<&str> = validators.keys().map(String::as_str).collect();
            let near = suggest(name, &known)
                .map(|k| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            let have = if known.is_empty() {
                "none is declared".to_string()
            } else {
                format!("declared: {}", known.join(", "))
            };
            return Err(self.err(
                span,
                format!("unknown validator `{name}`"),
                format!(
                    "{near}declare it as a `[validators.{name}]` table with a `prompt` ({have})"
                ),
            ));
        }
        Ok(())
    }

    /// `for_each = { sections = "file", marker = '^# (?P<name>.+)$' }`,
    /// `{ glob = "outputs/*.md" }` or `{ list = ["a", "b"] }`.
    fn for_each(&self, v: &Val<'_>) -> Res<ForEach> {
        let example = "`for_each = { list = [\"sarah\", \"marcus\"] }`, `for_each = { glob = \
                       \"outputs/character_*.md\" }` or `for_each = { sections = \
                       \"input/concept.md\", marker = '^# CHARACTER:\\s*(?P<name>.+)$' }`";
        let t = self.table("for_each", v, example)?;
        let es = entries(t);
        for e in &es {
            if !FOR_EACH_KEYS.contains(&e.key) {
                let near = suggest(e.key, FOR_EACH_KEYS)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                return Err(self.err(
                    &e.span,
                    format!("unknown key `{}` in `for_each`", e.key),
                    format!(
                        "{near}valid keys in `for_each`: {}",
                        FOR_EACH_KEYS.join(", ")
                    ),
                ));
            }
        }
        let get = |k: &str| es.iter().find(|e| e.key == k);
        let sources: Vec<&Entry<'_, '_>> = es
            .iter()
            .filter(|e| matches!(e.key, "sections" | "glob" | "list"))
            .collect();
        let [source] = sources.as_slice() else {
            let span = sources.get(1).map_or(v.span(), |e| e.span.clone());
            return Err(self.err(
                &span,
                "`for_each` needs exactly one source: `sections`, `glob` or `list`",
                format!("write one of {example}"),
            ));
        };
        if let (Some(m), false) = (get("marker"), source.key == "sections") {
            return Err(self.err(
                &m.span,
                "`for_each.marker` goes with `sections` only",
                "remove `marker`, or split a file at it with `sections = \"path\"`",
            ));
        }
        match source.key {
            "list" => Ok(ForEach::List {
                items: self
                    .str_array("for_each.list", source.val)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            }),
            "glob" => {
                let pattern = self.text_value("for_each.glob", source.val)?;
                self.rel_path("for_each.glob", &pattern, &source.val.span())?;
                Ok(ForEach::Glob { pattern })
            }
            _ => {
                let file = self.text_value("for_each.sections", source.val)?;
                self.rel_path("for_each.sections", &file, &source.val.span())?;
                let Some(m) = get("marker") else {
                    return Err(self.err(
                        &source.span,
                        "`for_each.sections` needs a `marker`: the regular expression a \
                         section's first line matches",
                        "add `marker = '^# CHARACTER:\\s*(?P<name>.+)$'` (a literal string in \
                         single quotes keeps the backslashes); the `name` capture gives each \
                         instance its key",
                    ));
                };
                let text = self.string("for_each.marker", m.val)?;
                let marker = regex::Regex::new(&text).map_err(|e| {
                    let why = e.to_string();
                    let why = why
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_string();
                    self.err(
                        &m.val.span(),
                        format!("`for_each.marker` is not a valid regular expression: {why}"),
                        "fix the expression (Rust regex syntax: https://docs.rs/regex); in a \
                         TOML literal string ('...') a backslash is written once",
                    )
                })?;
                for name in marker.capture_names().flatten() {
                    let upper = name.to_ascii_uppercase();
                    if FANOUT_PLACEHOLDERS.contains(&upper.as_str())
                        || super::BUILTIN_PLACEHOLDERS.contains(&upper.as_str())
                        || !crate::prompt::valid_name(&upper)
                    {
                        return Err(self.err(
                            &m.val.span(),
                            format!(
                                "`for_each.marker`: the capture `{name}` would fill \
                                 {{{{{upper}}}}}, which loki fills itself"
                            ),
                            "rename the capture, e.g. (?P<name>...)",
                        ));
                    }
                }
                Ok(ForEach::Sections { file, marker })
            }
        }
    }

    /// Fan-out placeholders (`{{KEY}}`, `{{ITEM}}`, `{{PATH}}`, a marker's
    /// captures) stand only in a template, and a template's paths and
    /// `depends_on` use no other placeholder (nothing else could fill
    /// them). Every output of a template depends on its item: else every
    /// instance would write the same file.
    #[allow(clippy::too_many_arguments)]
    fn check_fanout_names(
        &self,
        id: &str,
        fe: Option<&ForEach>,
        vars: &[(String, Range<usize>, Range<usize>)],
        var_values: &BTreeMap<String, String>,
        input_keys: &[(String, Range<usize>)],
        inputs: &BTreeMap<String, String>,
        input_spans: &BTreeMap<String, Range<usize>>,
        outputs: &[String],
        output_spans: &[Range<usize>],
        deps: &[(String, Range<usize>)],
    ) -> Res<()> {
        let names = fe.map(fanout::item_names).unwrap_or_default();
        let fanout_name =
            |n: &str| FANOUT_PLACEHOLDERS.contains(&n) || names.iter().any(|x| x == n);
        let shown = names
            .iter()
            .map(|n| format!("{{{{{n}}}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, span) in vars
            .iter()
            .map(|(n, s, _)| (n, s))
            .chain(input_keys.iter().map(|(n, s)| (n, s)))
        {
            if fe.is_some() && fanout_name(name) {
                return Err(self.err(
                    span,
                    format!("{{{{{name}}}}} is filled by the fan-out of stream `{id}`"),
                    format!("rename this var or input: a template's items fill {shown}"),
                ));
            }
        }
        // (key, text, span, only item names may be used in it)
        let mut texts: Vec<(&str, &str, &Range<usize>, bool)> = Vec::new();
        for (name, _, vspan) in vars {
            if let Some(v) = var_values.get(name) {
                texts.push(("vars", v, vspan, false));
            }
        }
        for (name, rel) in inputs {
            if let Some(span) = input_spans.get(name) {
                texts.push(("inputs", rel, span, true));
            }
        }
        for (o, span) in outputs.iter().zip(output_spans) {
            texts.push(("outputs", o, span, true));
        }
        for (d, span) in deps {
            texts.push(("depends_on", d, span, true));
        }
        for (key, text, span, strict) in texts {
            for (name, _, _) in crate::prompt::placeholders(text) {
                if fe.is_none() && fanout_name(&name) {
                    return Err(self.err(
                        span,
                        format!(
                            "{{{{{name}}}}} in `{key}` of stream `{id}`: it is filled only in \
                             a stream with `for_each`"
                        ),
                        "add `for_each = { list = [...] }` (or `glob`, or `sections`) to make \
                         the stream a template with one instance per item, or write the value \
                         out",
                    ));
                }
                if fe.is_some() && strict && !fanout_name(&name) {
                    return Err(self.err(
                        span,
                        format!(
                            "{{{{{name}}}}} in `{key}` of template `{id}` is not filled by its \
                             items"
                        ),
                        format!("a template's paths and depends_on may use {shown}"),
                    ));
                }
            }
        }
        if fe.is_some() {
            for (o, span) in outputs.iter().zip(output_spans) {
                if crate::prompt::placeholders(o).is_empty() {
                    return Err(self.err(
                        span,
                        format!(
                            "every instance of template `{id}` would write `{o}`: the path \
                             does not depend on the item"
                        ),
                        format!(
                            "put the item's key in the path, e.g. \"{}\"",
                            keyed_example(o)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
    /// Sorts override entries into file order and refuses a key set twice
    /// (directly in the stream and in its sub-table).
    fn once_each<'a, 'i>(
        &self,
        mut es: Vec<Entry<'a, 'i>>,
        id: &str,
        sub: &str,
    ) -> Res<Vec<Entry<'a, 'i>>> {
        es.sort_by_key(|e| e.span.start);
        for (i, e) in es.iter().enumerate() {
            if let Some(first) = es[..i].iter().find(|f| f.key == e.key) {
                return Err(self.err(
                    &e.span,
                    format!(
                        "`{}` is set twice for stream `{id}` (also at line {})",
                        e.key,
                        self.line(&first.span)
                    ),
                    format!("set it once: either directly in the [[streams]] table or in {sub}"),
                ));
            }
        }
        Ok(es)
    }

    fn parse(&self) -> Res<Parsed> {
        let doc = DeTable::parse(self.text).map_err(|e| self.toml_error(&e))?;
        let top = entries(doc.get_ref());
        self.check_keys(&top, Section::Top)?;

        let mut swarm = SwarmSettings::default();
        let mut merge = super::MergeSettings::default();
        let mut agent = AgentSettings::default();
        let mut checks = CheckSettings::default();
        let mut base = BaseSpans::default();
        for e in &top {
            match e.key {
                "swarm" => {
                    let es = entries(self.table("swarm", e.val, "a [swarm] table")?);
                    self.check_keys(&es, Section::Swarm)?;
                    for x in &es {
                        self.apply_swarm(&mut swarm, x)?;
                    }
                }
                "merge" => {
                    let es = entries(self.table("merge", e.val, "a [merge] table")?);
                    self.check_keys(&es, Section::Merge)?;
                    for x in &es {
                        self.apply_merge(&mut merge, x)?;
                    }
                }
                "agent" => {
                    let es = entries(self.table("agent", e.val, "an [agent] table")?);
                    self.check_keys(&es, Section::Agent)?;
                    // At the `[` of the `[agent]` header.
                    let start = match self.text[..e.span.start].strip_suffix('[') {
                        Some(before) => before.len(),
                        None => e.span.start,
                    };
                    base.agent = Some(start..e.span.end);
                    for x in &es {
                        self.apply_agent(&mut agent, x)?;
                        if x.key == "command" {
                            base.agent_command = Some(x.span.clone());
                        }
                    }
                }
                "checks" => {
                    let es = entries(self.table("checks", e.val, "a [checks] table")?);
                    self.check_keys(&es, Section::Checks)?;
                    for x in &es {
                        self.apply_check(&mut checks, x)?;
                        if x.key == "command" {
                            base.check_command = Some(x.val.span());
                        }
                        if x.key == "commands" {
                            for (c, span) in self.check_commands(x.val)? {
                                base.check_commands.insert(c.name, span);
                            }
                        }
                        if x.key == "validators" {
                            base.validators = self.str_array("validators", x.val)?;
                        }
                    }
                }
                _ => {}
            }
        }
        // After the loop: a validator inherits `[agent]` wherever it stands.
        let (validators, validator_prompts) = match top.iter().find(|e| e.key == "validators") {
            Some(e) => self.validators(e.val, &agent)?,
            None => Default::default(),
        };

        let Some(streams_e) = top.iter().find(|e| e.key == "streams") else {
            return Err(ConfigError {
                file: self.file.to_path_buf(),
                line: 0,
                col: 0,
                message: "the swarm file defines no streams".into(),
                help: MINIMAL_STREAM.into(),
            });
        };
        let DeValue::Array(items) = streams_e.val.get_ref() else {
            return Err(self.err(
                &streams_e.val.span(),
                format!(
                    "`streams` must be an array of tables, found {}",
                    type_name(streams_e.val)
                ),
                "write each stream as its own [[streams]] table (double brackets)",
            ));
        };
        if items.is_empty() {
            return Err(self.err(
                &streams_e.span,
                "the swarm file defines no streams",
                MINIMAL_STREAM,
            ));
        }
        let mut ids: HashMap<String, Range<usize>> = HashMap::new();
        let mut raws = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            raws.push(self.stream(n + 1, item, &agent, &checks, &mut ids)?);
        }

        for r in &raws {
            let names = if r.validators_at.is_empty() {
                &base.validators
            } else {
                &r.validators_at
            };
            self.known_validators(names, &validators)?;
        }
        if raws.iter().all(|r| r.validators_at.is_empty()) {
            self.known_validators(&base.validators, &validators)?;
        }

        let known: Vec<&str> = raws.iter().map(|r| r.cfg.id.as_str()).collect();
        let templates: BTreeSet<String> = raws
            .iter()
            .filter(|r| r.template.is_some())
            .map(|r| r.cfg.id.to_string())
            .collect();
        for r in &raws {
            for (d, span) in &r.deps {
                let id = &r.cfg.id;
                if *id == *d || fanout::pairing(d) == Some(id.as_str()) {
                    return Err(self.err(
                        span,
                        format!("stream `{id}` depends on itself"),
                        format!("remove \"{d}\" from its depends_on"),
                    ));
                }
                if d.contains("{{") {
                    match fanout::pairing(d) {
                        Some(p) if templates.contains(p) => continue,
                        Some(p) => {
                            return Err(self.err(
                                span,
                                format!(
                                    "stream `{id}` depends on `{d}`, but `{p}` is not a stream \
                                     with `for_each`"
                                ),
                                format!(
                                    "`<template>.{{{{KEY}}}}` pairs each instance with the \
                                     instance of that template with the same key; templates \
                                     here: {}",
                                    list_or_none(&templates)
                                ),
                            ))
                        }
                        None => {
                            return Err(self.err(
                                span,
                                format!("`depends_on` entry `{d}` of stream `{id}` is not an id"),
                                "a template's instance is named `<template>.{{KEY}}`, e.g. \
                                 \"plan.{{KEY}}\"",
                            ))
                        }
                    }
                }
                if !ids.contains_key(d) {
                    let near = suggest(d, &known)
                        .map(|k| format!("did you mean `{k}`? "))
                        .unwrap_or_default();
                    return Err(self.err(
                        span,
                        format!("stream `{id}` depends on unknown stream `{d}`"),
                        format!(
                            "{near}depends_on lists ids of streams in this file: {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }

        let configs: Vec<StreamConfig> = raws.iter().map(|r| r.cfg.clone()).collect();
        // A pairing waits for the template it names.
        let graph = fanout::pairing_graph(&configs);
        if let Err(cycle) = plan::topo_order(&graph) {
            let first = cycle.first().cloned().unwrap_or_default();
            let next = cycle.get(1).cloned().unwrap_or_default();
            let span = raws
                .iter()
                .find(|r| r.cfg.id == first)
                .and_then(|r| {
                    r.deps
                        .iter()
                        .find(|(d, _)| fanout::pairing(d).unwrap_or(d) == next)
                })
                .map(|(_, s)| s.clone())
                .unwrap_or(0..0);
            return Err(self.err(
                &span,
                format!("dependency cycle: {}", cycle.join(" -> ")),
                format!(
                    "each stream waits for the next one to merge, so none of them can ever \
                     start; remove one of these depends_on entries (for example \"{next}\" \
                     from stream `{first}`)"
                ),
            ));
        }

        let path = std::path::absolute(self.file).unwrap_or_else(|_| self.file.to_path_buf());
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let command_at = raws
            .iter()
            .map(|r| {
                let span = r
                    .command_key
                    .as_ref()
                    .or(base.agent_command.as_ref())
                    .or(base.agent.as_ref())
                    .unwrap_or(&r.header);
                self.lines.line_col(self.text, span.start)
            })
            .collect();
        let pos = |span: &Range<usize>| self.lines.line_col(self.text, span.start);
        let at = raws
            .iter()
            .map(|r| StreamAt {
                header: pos(&r.header),
                prompt: pos(&r.prompt_span),
                inputs: r
                    .input_spans
                    .iter()
                    .map(|(name, span)| (name.clone(), pos(span)))
                    .collect(),
                outputs: r.output_spans.iter().map(pos).collect(),
                check_command: r.check_command.as_ref().map(pos),
                check_commands: r
                    .check_commands
                    .iter()
                    .map(|(n, span)| (n.clone(), pos(span)))
                    .collect(),
            })
            .collect();
        let templates = raws
            .iter()
            .filter_map(|r| {
                let (fe, allow_empty, span) = r.template.clone()?;
                Some(Template {
                    stream: r.cfg.clone(),
                    for_each: fe,
                    allow_empty,
                    deferred: false,
                    at: pos(&span),
                })
            })
            .collect();
        Ok(Parsed {
            swarm: SwarmFile {
                path,
                root,
                swarm,
                merge,
                streams: configs,
                templates,
                validators,
                command_at,
            },
            file: self.file.to_path_buf(),
            at,
            check_command: base.check_command.as_ref().map(pos),
            check_commands: base
                .check_commands
                .iter()
                .map(|(n, span)| (n.clone(), pos(span)))
                .collect(),
            validator_prompts,
        })
    }
}

/// `o` with `{{KEY}}` before its extension: `chars/x.md` → `chars/x-{{KEY}}.md`.
fn keyed_example(o: &str) -> String {
    match o.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') => format!("{stem}-{{{{KEY}}}}.{ext}"),
        _ => format!("{o}-{{{{KEY}}}}"),
    }
}

fn list_or_none(ids: &BTreeSet<String>) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A close id for an invalid one, if there is one.
pub(super) fn sanitized_id(id: &str) -> Option<String> {
    let mut s: String = id
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    let mut s = s
        .trim_start_matches(['.', '_', '-'])
        .chars()
        .take(64)
        .collect::<String>();
    loop {
        let before = s.len();
        s = s.trim_end_matches('.').to_string();
        if let Some(t) = s.strip_suffix(".lock") {
            s = t.to_string();
        }
        if s.len() == before {
            break;
        }
    }
    (valid_stream_id(&s) && s != id).then_some(s)
}

/// `p` as git names it in a tree: its normal components joined by `/`
/// (`./a//b.md` is `a/b.md`), so two spellings of one file compare equal.
pub fn normal_path(p: &str) -> String {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}
