//! Fan-out: a `[[streams]]` table with `for_each` is a template that
//! becomes one stream per item of its source.
//!
//! - Items: the sections of a file split at a marker regex, the files of a
//!   glob, or the values of a list ([`items`]), read from the target
//!   branch's tree, never the checkout: that tree is what a worktree holds.
//! - Each item gives a key (a slug of the marker's `name` capture, else its
//!   first capture, else the line; of the file's stem; of the value) and
//!   the values `{{KEY}}`, `{{ITEM}}` (the section with its marker line, the
//!   file's contents, the value), `{{PATH}}` (glob items) and every named
//!   capture in upper case. An instance is `<template>.<key>`, with those
//!   values filled into its outputs, inputs, vars and `depends_on`, and
//!   given to its prompt as vars ([`instances`]).
//! - A template whose source another stream it depends on writes (directly
//!   or not) is *deferred*: pass 2 validates a stand-in (the template with
//!   sample values, under the template's own id), and the supervisor makes
//!   the instances once every dependency has merged, from the file as
//!   merged ([`expand_deferred`]). So is one that pairs with a deferred
//!   template (`depends_on = ["plan.{{KEY}}"]`): its partners are not
//!   known before that.
//! - `depends_on = ["char"]` (a template's id) waits for every instance;
//!   `"plan.{{KEY}}"` waits for the instance of `plan` with the same key,
//!   which must exist. A deferred template waits for the templates it
//!   depends on as a whole, pairing included: simpler to reason about than
//!   a graph that grows key by key, at the cost of some overlap.

use std::collections::{BTreeMap, BTreeSet};

use super::diag::Res;
use super::parse::{normal_path, Parsed, StreamAt};
use super::{ConfigError, ForEach, StreamConfig, SwarmFile, Template};
use crate::git::{BranchTree, TreeEntry};
use crate::model::StreamId;
use crate::util::{glob_match, is_glob, slug, MAX_PROMPT_FILE};
use crate::{plan, prompt};

/// The placeholders every fan-out fills, besides the marker's captures.
pub const KEY: &str = "KEY";
pub const ITEM: &str = "ITEM";
pub const PATH: &str = "PATH";
/// Names only a template's paths, vars and prompt may use.
pub const FANOUT_PLACEHOLDERS: &[&str] = &[KEY, ITEM, PATH];

/// One item of a source: its key, the values it fills, and how messages
/// name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub values: BTreeMap<String, String>,
    pub label: String,
}

/// The placeholder names an item of `fe` fills.
pub fn item_names(fe: &ForEach) -> Vec<String> {
    let mut names = vec![KEY.to_string(), ITEM.to_string()];
    match fe {
        ForEach::Glob { .. } => names.push(PATH.into()),
        ForEach::Sections { marker, .. } => names.extend(
            marker
                .capture_names()
                .flatten()
                .map(str::to_ascii_uppercase),
        ),
        ForEach::List { .. } => {}
    }
    names
}

/// The items of `fe`, read from `tree` (a list reads nothing). `Err` says
/// what is wrong with the source.
pub fn items(fe: &ForEach, tree: Option<&BranchTree>) -> Result<Vec<Item>, String> {
    let tree = match (fe, tree) {
        (ForEach::List { .. }, _) | (_, Some(_)) => tree,
        (_, None) => return Err("the target branch cannot be read".into()),
    };
    match fe {
        ForEach::List { items } => Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let key = slug(v);
                Item {
                    values: BTreeMap::from([(KEY.into(), key.clone()), (ITEM.into(), v.clone())]),
                    key,
                    label: format!("list entry {} (\"{v}\")", i + 1),
                }
            })
            .collect()),
        ForEach::Sections { file, marker } => {
            let Some(tree) = tree else {
                return Ok(Vec::new());
            };
            let text = tree_text(tree, file)?;
            Ok(sections(&text, marker, file))
        }
        ForEach::Glob { pattern } => {
            let Some(tree) = tree else {
                return Ok(Vec::new());
            };
            let b = tree.branch();
            let mut out = Vec::new();
            for path in tree.files_matching(pattern) {
                let text = tree_text(tree, &path)?;
                let stem = std::path::Path::new(&path)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let key = slug(&stem);
                out.push(Item {
                    values: BTreeMap::from([
                        (KEY.into(), key.clone()),
                        (ITEM.into(), text),
                        (PATH.into(), path.clone()),
                    ]),
                    key,
                    label: format!("`{path}` in branch `{b}`"),
                });
            }
            Ok(out)
        }
    }
}

/// A file of `tree` as text, or why it cannot be an item's source.
fn tree_text(tree: &BranchTree, rel: &str) -> Result<String, String> {
    let b = tree.branch();
    let rel = normal_path(rel);
    if let Some((link, to)) = tree.link_on_path(&rel) {
        return Err(format!(
            "`{rel}` is reached through a symlink in branch `{b}` (`{link}` points to `{to}`)"
        ));
    }
    match tree.entry(&rel) {
        None => return Err(format!("`{rel}` is not in branch `{b}`")),
        Some(TreeEntry::Folder) => return Err(format!("`{rel}` is a folder in branch `{b}`")),
        Some(_) => {}
    }
    let bytes = tree
        .read(&rel, MAX_PROMPT_FILE)
        .ok_or_else(|| format!("`{rel}` in branch `{b}` is larger than 8 MiB"))?;
    String::from_utf8(bytes).map_err(|_| format!("`{rel}` in branch `{b}` is not UTF-8 text"))
}

/// The sections of `text`: each starts at a line `marker` matches and runs
/// to the next such line, a `---` line or the end. Text before the first
/// marker belongs to no item.
pub fn sections(text: &str, marker: &regex::Regex, file: &str) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    let mut open: Option<(Item, Vec<&str>)> = None;
    let close = |open: &mut Option<(Item, Vec<&str>)>, out: &mut Vec<Item>| {
        if let Some((mut item, lines)) = open.take() {
            item.values
                .insert(ITEM.into(), lines.join("\n").trim_end().to_string());
            out.push(item);
        }
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(caps) = marker.captures(line) {
            close(&mut open, &mut out);
            let basis = caps
                .name("name")
                .or_else(|| caps.iter().skip(1).flatten().next())
                .map_or(line, |m| m.as_str());
            let key = slug(basis);
            let mut values = BTreeMap::from([(KEY.to_string(), key.clone())]);
            for name in marker.capture_names().flatten() {
                let v = caps.name(name).map_or("", |m| m.as_str()).trim();
                values.insert(name.to_ascii_uppercase(), v.to_string());
            }
            let item = Item {
                key,
                values,
                label: format!("the section at `{file}` line {}", n + 1),
            };
            open = Some((item, vec![line]));
        } else if line.trim_end() == "---" {
            close(&mut open, &mut out);
        } else if let Some((_, lines)) = open.as_mut() {
            lines.push(line);
        }
    }
    close(&mut open, &mut out);
    out
}

/// The instances of `tpl` for `items`. `groups` holds the instance ids of
/// every template already expanded: a dependency on a template's id
/// becomes its instances, `"plan.{{KEY}}"` the partner with this key (an
/// error when `plan` has none).
pub fn instances(
    tpl: &Template,
    items: Vec<Item>,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<StreamConfig>, String> {
    let t = &tpl.stream;
    let id = t.id.as_str();
    if items.is_empty() && !tpl.allow_empty {
        return Err(format!(
            "the fan-out of stream `{id}` found no item in {}",
            tpl.for_each.describe()
        ));
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        if item.key.is_empty() {
            return Err(format!(
                "{} gives an empty key: a key is made of the ASCII letters and digits of the \
                 item's name, and this one has none",
                item.label
            ));
        }
        // The id may be at most 64 characters: the key gives way.
        let room = 64usize.saturating_sub(id.len() + 1);
        let key: String = item.key.chars().take(room).collect();
        let key = key.trim_end_matches('-').to_string();
        if let Some(first) = seen.get(&key) {
            return Err(format!(
                "{} and {first} both give the key `{key}` (the instance `{id}.{key}`)",
                item.label
            ));
        }
        let inst_id = format!("{id}.{key}");
        let Ok(inst) = StreamId::parse(&inst_id) else {
            return Err(format!(
                "{} gives the key `{key}`, and `{inst_id}` is not a valid stream id",
                item.label
            ));
        };
        seen.insert(key.clone(), item.label.clone());
        item.values.insert(KEY.into(), key);
        let v = &item.values;
        let mut vars: BTreeMap<String, String> = t
            .vars
            .iter()
            .map(|(k, x)| (k.clone(), prompt::fill_known(x, v)))
            .collect();
        vars.extend(v.iter().map(|(k, x)| (k.clone(), x.clone())));
        let mut deps = Vec::new();
        for d in &t.depends_on {
            for r in resolve_dep(d, v, groups).map_err(|e| format!("{}: {e}", item.label))? {
                if !deps.contains(&r) {
                    deps.push(r);
                }
            }
        }
        out.push(StreamConfig {
            id: inst,
            prompt: t.prompt.clone(),
            vars,
            inputs: t
                .inputs
                .iter()
                .map(|(k, x)| (k.clone(), prompt::fill_known(x, v)))
                .collect(),
            outputs: t.outputs.iter().map(|o| prompt::fill_known(o, v)).collect(),
            depends_on: deps,
            agent: t.agent.clone(),
            checks: t.checks.clone(),
            template: Some(id.to_string()),
            validation_report: t
                .validation_report
                .as_ref()
                .map(|r| prompt::fill_known(r, v)),
        });
    }
    Ok(out)
}

/// The ids `d` (a `depends_on` entry of a template) stands for with the
/// values `v`.
fn resolve_dep(
    d: &str,
    v: &BTreeMap<String, String>,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, String> {
    if let Some(partner) = pairing(d) {
        let filled = prompt::fill_known(d, v);
        return match groups.get(partner) {
            Some(ids) if ids.contains(&filled) => Ok(vec![filled]),
            _ => Err(format!(
                "it depends on `{filled}` (`{d}`), but `{partner}` has no such instance"
            )),
        };
    }
    Ok(groups
        .get(d)
        .cloned()
        .unwrap_or_else(|| vec![d.to_string()]))
}

/// The template a pairing dependency names: `plan` for `plan.{{KEY}}`.
pub fn pairing(dep: &str) -> Option<&str> {
    let at = dep.find("{{")?;
    dep[..at].strip_suffix('.').filter(|p| !p.contains("{{"))
}

/// The graph over `streams` with each pairing (`plan.{{KEY}}`) as a
/// dependency on the whole template it names.
pub(super) fn pairing_graph(streams: &[StreamConfig]) -> Vec<(String, Vec<String>)> {
    streams
        .iter()
        .map(|s| {
            let deps = s
                .depends_on
                .iter()
                .map(|d| pairing(d).unwrap_or(d).to_string())
                .collect();
            (s.id.to_string(), deps)
        })
        .collect()
}

/// Sample values for a template's item names: what its stand-in is
/// validated with.
fn sample_values(fe: &ForEach) -> BTreeMap<String, String> {
    item_names(fe)
        .into_iter()
        .map(|n| {
            let v = match n.as_str() {
                PATH => "sample-item.md".to_string(),
                _ => "sample-item".to_string(),
            };
            (n, v)
        })
        .collect()
}

/// Whether an output `out` (a template's, with its placeholders filled by
/// samples) may be one of the files `source` names.
fn covers(source: &ForEach, out: &str) -> bool {
    let out = normal_path(out);
    match source {
        ForEach::Sections { file, .. } => normal_path(file) == out,
        ForEach::Glob { pattern } => glob_match(pattern, &out),
        ForEach::List { .. } => false,
    }
}

/// Pass 1½: every template with a source in the target tree becomes its
/// instances; every deferred one a stand-in under its own id (removed
/// again by [`drop_stand_ins`] after pass 2). Dependencies on a
/// template's id become its instances.
pub(super) fn expand(parsed: &mut Parsed) -> Res<BTreeSet<String>> {
    if parsed.swarm.templates.is_empty() {
        return Ok(BTreeSet::new());
    }
    let tree = crate::git::repo_root(&parsed.swarm.root)
        .ok()
        .and_then(|r| BranchTree::open(&r, parsed.swarm.swarm.target.as_deref()));
    let streams = &parsed.swarm.streams;
    let tpl_of: BTreeMap<&str, usize> = parsed
        .swarm
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| (t.stream.id.as_str(), i))
        .collect();
    let nodes = pairing_graph(streams);
    let order = plan::topo_order(&nodes).unwrap_or_default();
    let graph = plan::Upstream::new(&nodes);
    // What each stream may write, a template's with sample values.
    let writes: Vec<Vec<String>> = streams
        .iter()
        .map(|s| match tpl_of.get(s.id.as_str()) {
            Some(&i) => {
                let v = sample_values(&parsed.swarm.templates[i].for_each);
                s.outputs
                    .iter()
                    .map(|o| prompt::fill_known(o, &v))
                    .collect()
            }
            None => s.outputs.clone(),
        })
        .collect();

    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut made: BTreeMap<String, Vec<StreamConfig>> = BTreeMap::new();
    let mut deferred: BTreeSet<String> = BTreeSet::new();
    for id in &order {
        let Some(&ti) = tpl_of.get(id.as_str()) else {
            continue;
        };
        let Some(si) = graph.index_of(id) else {
            continue;
        };
        let tpl = &parsed.swarm.templates[ti];
        let produced = graph
            .of(si)
            .into_iter()
            .any(|u| writes[u].iter().any(|o| covers(&tpl.for_each, o)));
        let pairs_deferred = tpl
            .stream
            .depends_on
            .iter()
            .filter_map(|d| pairing(d))
            .any(|p| deferred.contains(p));
        let needs_tree = !matches!(tpl.for_each, ForEach::List { .. });
        let tree = tree.as_ref().filter(|_| needs_tree);
        if produced || pairs_deferred || (needs_tree && tree.is_none()) {
            deferred.insert(id.clone());
            continue;
        }
        let at = tpl.at;
        let list = items(&tpl.for_each, tree)
            .and_then(|items| instances(tpl, items, &groups))
            .map_err(|e| static_error(&parsed.file, at, tpl, e))?;
        groups.insert(id.clone(), list.iter().map(|s| s.id.to_string()).collect());
        made.insert(id.clone(), list);
    }

    // The new stream list, in file order, with positions to match.
    let mut streams = Vec::new();
    let mut at: Vec<StreamAt> = Vec::new();
    let mut command_at = Vec::new();
    let old = std::mem::take(&mut parsed.swarm.streams);
    let old_at = std::mem::take(&mut parsed.at);
    let old_cmd = std::mem::take(&mut parsed.swarm.command_at);
    for ((s, a), c) in old.into_iter().zip(old_at).zip(old_cmd) {
        if let Some(list) = made.remove(s.id.as_str()) {
            for inst in list {
                streams.push(inst);
                at.push(a.clone());
                command_at.push(c);
            }
            continue;
        }
        let mut s = s;
        if let Some(&ti) = tpl_of.get(s.id.as_str()) {
            // A deferred template's stand-in: sample values in its paths.
            let v = sample_values(&parsed.swarm.templates[ti].for_each);
            s.vars = s
                .vars
                .iter()
                .map(|(k, x)| (k.clone(), prompt::fill_known(x, &v)))
                .collect();
            s.vars.extend(v.clone());
            s.inputs = s
                .inputs
                .iter()
                .map(|(k, x)| (k.clone(), prompt::fill_known(x, &v)))
                .collect();
            s.outputs = s
                .outputs
                .iter()
                .map(|o| prompt::fill_known(o, &v))
                .collect();
        }
        let mut deps = Vec::new();
        for d in &s.depends_on {
            let d = pairing(d).unwrap_or(d);
            for r in groups
                .get(d)
                .cloned()
                .unwrap_or_else(|| vec![d.to_string()])
            {
                if !deps.contains(&r) {
                    deps.push(r);
                }
            }
        }
        s.depends_on = deps;
        streams.push(s);
        at.push(a);
        command_at.push(c);
    }
    parsed.swarm.streams = streams;
    parsed.at = at;
    parsed.swarm.command_at = command_at;
    for t in &mut parsed.swarm.templates {
        t.deferred = deferred.contains(t.stream.id.as_str());
    }
    Ok(deferred)
}

fn static_error(
    file: &std::path::Path,
    at: (usize, usize),
    tpl: &Template,
    e: String,
) -> ConfigError {
    ConfigError::at(file, at, e, fanout_help(tpl))
}

/// How to fix a fan-out that cannot be made.
fn fanout_help(tpl: &Template) -> String {
    match &tpl.for_each {
        ForEach::Sections { file, .. } => format!(
            "commit `{file}` with at least one line the marker matches, fix the marker, or set \
             `allow_empty = true` if no section is a finished fan-out; keys must differ: two \
             items with the same key would be one stream"
        ),
        ForEach::Glob { pattern } if is_glob(pattern) => format!(
            "commit files matching `{pattern}` to the target, fix the pattern, or set \
             `allow_empty = true`; keys (file stems) must differ"
        ),
        ForEach::Glob { .. } => {
            "commit the file, or fix the path; `allow_empty = true` allows none".into()
        }
        ForEach::List { .. } => "give each list entry its own name (keys are its lowercase \
                                 letters and digits), or set `allow_empty = true` for an empty \
                                 list"
            .into(),
    }
}

/// Removes the stand-ins of deferred templates after pass 2.
pub(super) fn drop_stand_ins(swarm: &mut SwarmFile, stand_ins: &BTreeSet<String>) {
    if stand_ins.is_empty() {
        return;
    }
    let keep: Vec<bool> = swarm
        .streams
        .iter()
        .map(|s| !stand_ins.contains(s.id.as_str()))
        .collect();
    let mut k = keep.iter();
    swarm.streams.retain(|_| *k.next().unwrap_or(&true));
    let mut k = keep.iter();
    swarm.command_at.retain(|_| *k.next().unwrap_or(&true));
}

/// The instances of the deferred template `tpl` once its dependencies have
/// merged, from `tree` (the target as it is now). `groups` holds the
/// instance ids of every template expanded so far. The refusal names the
/// swarm file's `for_each` line.
pub fn expand_deferred(
    swarm: &SwarmFile,
    tpl: &Template,
    tree: &BranchTree,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<StreamConfig>, ConfigError> {
    items(&tpl.for_each, Some(tree))
        .and_then(|items| instances(tpl, items, groups))
        .map_err(|e| ConfigError::at(&swarm.path, tpl.at, e, fanout_help(tpl)))
}

/// Adds the instances of every deferred template whose source is on the
/// target now (in dependency order), and turns dependencies on those
/// templates into dependencies on their instances: the swarm as commands
/// run without a supervisor see it (`loki status`, `loki approve`, …).
/// The supervisor makes them itself, once their dependencies have merged.
/// A template whose fan-out cannot be made yet is left as it is.
pub fn expand_known(swarm: &mut SwarmFile) {
    let waiting: Vec<Template> = swarm
        .templates
        .iter()
        .filter(|t| t.deferred)
        .cloned()
        .collect();
    if waiting.is_empty() {
        return;
    }
    let Some(tree) = crate::git::repo_root(&swarm.root)
        .ok()
        .and_then(|r| BranchTree::open(&r, swarm.swarm.target.as_deref()))
    else {
        return;
    };
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &swarm.streams {
        if let Some(t) = &s.template {
            groups.entry(t.clone()).or_default().push(s.id.to_string());
        }
    }
    let mut tried: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut progress = false;
        for t in &waiting {
            let id = t.stream.id.to_string();
            if tried.contains(&id) {
                continue;
            }
            let partners_known = t.stream.depends_on.iter().all(|d| match pairing(d) {
                Some(p) => groups.contains_key(p) || !waiting.iter().any(|w| w.stream.id == p),
                None => true,
            });
            if !partners_known {
                continue;
            }
            tried.insert(id.clone());
            progress = true;
            if let Ok(list) = expand_deferred(swarm, t, &tree, &groups) {
                groups.insert(id, list.iter().map(|s| s.id.to_string()).collect());
                swarm.streams.extend(list);
            }
        }
        if !progress {
            break;
        }
    }
    for s in &mut swarm.streams {
        let mut deps = Vec::new();
        for d in &s.depends_on {
            for r in groups.get(d).cloned().unwrap_or_else(|| vec![d.clone()]) {
                if !deps.contains(&r) {
                    deps.push(r);
                }
            }
        }
        s.depends_on = deps;
    }
}
