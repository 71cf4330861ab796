//! Reading history back, for `loki log` and the demo: the target's
//! first-parent line of `Merge stream <id>` commits with the attempt
//! commits each brought in, the `Loki-*` trailers of a message, and a
//! `git log --graph --oneline` picture drawn without the git CLI.
//!
//! Decisions worth knowing:
//!
//! - **What a stream merge is.** A commit on the target's first-parent line
//!   with two or more parents, a `Loki-Stream` trailer and the subject
//!   `Merge stream <id>`. What it brought in are the commits reachable from
//!   its second parent and not from its first, oldest first.
//! - **Trailers** are parsed by libgit2 (`git_message_trailers`, the rules of
//!   `git interpret-trailers`), with a plain last-paragraph parser as a
//!   fallback for messages libgit2 refuses. The first occurrence of a key wins.
//! - **The target** is `refs/heads/<target>`, else
//!   `refs/remotes/origin/<target>` (a clone that has not checked the branch
//!   out), else any revision git understands.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{Commit, ErrorCode, Oid, Repository, Sort};

use super::{branch_oid, open_repo};
use crate::model::trailers;

/// One commit, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitInfo {
    pub id: String,
    /// The whole message (invalid UTF-8 replaced).
    pub message: String,
    /// Its trailers, in order ([`parse_trailers`]).
    pub trailers: Vec<(String, String)>,
    /// Committer time, RFC 3339 in the committer's own offset.
    pub committed_at: String,
}

impl CommitInfo {
    /// The message's first line, trimmed.
    pub fn subject(&self) -> &str {
        subject(&self.message)
    }
}

/// A `Merge stream <id>` commit and the commits it brought in.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMerge {
    /// The stream id its `Loki-Stream` trailer names.
    pub stream: String,
    pub merge: CommitInfo,
    /// Reachable from the second parent and not from the first, oldest
    /// first (topological order).
    pub brought_in: Vec<CommitInfo>,
}

/// The stream merges on a target's first-parent line.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeHistory {
    /// Commit the target pointed at.
    pub head: String,
    /// Oldest first.
    pub merges: Vec<StreamMerge>,
}

/// The paths a merge commit changed against its first parent (the
/// target before it), sorted: what a stream brought in.
pub fn merge_paths(root: &Path, merge: &str) -> Result<Vec<String>> {
    let repo = open_repo(root)?;
    let ctx = || format!("reading merge {merge} in {}", root.display());
    let oid = Oid::from_str(merge).with_context(ctx)?;
    let commit = repo.find_commit(oid).with_context(ctx)?;
    let before = commit.parent(0).and_then(|p| p.tree()).with_context(ctx)?;
    let after = commit.tree().with_context(ctx)?;
    let diff = repo
        .diff_tree_to_tree(Some(&before), Some(&after), None)
        .with_context(ctx)?;
    Ok(super::diff_paths(&diff).into_iter().collect())
}

/// Reads the stream merges of `target` in the repository around `root`
/// (found by discovery, so a fresh clone with no `.loki/` works).
pub fn stream_merges(root: &Path, target: &str) -> Result<MergeHistory> {
    let repo = Repository::discover(root)
        .with_context(|| format!("opening the git repository at {}", root.display()))?;
    let head = resolve_target(&repo, root, target)?;
    let ctx = || format!("walking the history of {target} in {}", root.display());

    let mut first_parent = first_parent_line(&repo, head).with_context(ctx)?;
    first_parent.reverse();

    let mut merges = Vec::new();
    for oid in first_parent {
        let commit = repo
            .find_commit(oid)
            .with_context(|| format!("reading commit {oid} in {}", root.display()))?;
        let Some(stream) = merged_stream_of(&commit) else {
            continue;
        };
        let info = commit_info(&commit);
        let brought_in = brought_in(&repo, root, &commit, &stream)?;
        merges.push(StreamMerge {
            stream,
            merge: info,
            brought_in,
        });
    }
    Ok(MergeHistory {
        head: head.to_string(),
        merges,
    })
}

/// `head` and its first parents, newest first.
pub(super) fn first_parent_line(repo: &Repository, head: Oid) -> Result<Vec<Oid>, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.simplify_first_parent()?;
    walk.collect()
}

/// The stream a commit is loki's merge of (see the module doc), if it is one.
pub(super) fn merged_stream_of(commit: &Commit) -> Option<String> {
    if commit.parent_count() < 2 {
        return None;
    }
    let message = String::from_utf8_lossy(commit.message_bytes());
    let trailers = parse_trailers(&message);
    let id = trailer(&trailers, trailers::STREAM)?;
    (subject(&message) == format!("Merge stream {id}")).then(|| id.to_string())
}

/// Every stream the target's first-parent line has a merge of, with its
/// merge commits (newest first): what start-up checks the state files
/// against.
pub fn merged_streams(root: &Path, target: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let repo = open_repo(root)?;
    let head = resolve_target(&repo, root, target)?;
    let ctx = || format!("walking the history of {target} in {}", root.display());
    let mut found = BTreeMap::new();
    for oid in first_parent_line(&repo, head).with_context(ctx)? {
        let commit = repo.find_commit(oid).with_context(ctx)?;
        if let Some(id) = merged_stream_of(&commit) {
            found
                .entry(id)
                .or_insert_with(Vec::new)
                .push(oid.to_string());
        }
    }
    Ok(found)
}

/// The trailers of a commit message, in order.
pub fn parse_trailers(message: &str) -> Vec<(String, String)> {
    match git2::message_trailers_strs(message) {
        Ok(t) => t
            .iter()
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        Err(_) => last_paragraph_trailers(message),
    }
}

/// The first value of `key` (case-insensitive, like git).
pub fn trailer<'a>(trailers: &'a [(String, String)], key: &str) -> Option<&'a str> {
    trailers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// `git log --graph --oneline <branch>`, drawn from git2: one line per
/// commit (newest first, children before parents) with its abbreviated id
/// and subject, and lanes joined by `|`, `\` and `/` as git draws them.
pub fn graph_oneline(root: &Path, branch: &str) -> Result<String> {
    let repo = open_repo(root)?;
    let head = branch_oid(&repo, root, branch)?;
    let ctx = || format!("walking the history of {branch} in {}", root.display());
    let mut walk = repo.revwalk().with_context(ctx)?;
    walk.push(head).with_context(ctx)?;
    let mut commits = HashMap::new();
    let mut children: HashMap<Oid, usize> = HashMap::new();
    for oid in walk {
        let oid = oid.with_context(ctx)?;
        let commit = repo.find_commit(oid).with_context(ctx)?;
        let short = commit
            .as_object()
            .short_id()
            .ok()
            .and_then(|b| b.as_str().map(str::to_string))
            .unwrap_or_else(|| oid.to_string().chars().take(7).collect());
        let text = format!("{short} {}", commit.summary().unwrap_or(""));
        let parents: Vec<Oid> = commit.parent_ids().collect();
        for p in &parents {
            *children.entry(*p).or_default() += 1;
        }
        commits.insert(oid, (parents, text));
    }
    // git's --topo-order: a commit once all its children are shown, the
    // last one made ready first (so a merge's side branch comes right
    // after it).
    let mut rows = Vec::new();
    let mut ready = vec![head];
    while let Some(oid) = ready.pop() {
        let Some((parents, text)) = commits.remove(&oid) else {
            continue;
        };
        for p in &parents {
            let left = children.entry(*p).or_default();
            *left = left.saturating_sub(1);
            if *left == 0 {
                ready.push(*p);
            }
        }
        rows.push((oid, parents, text));
    }
    Ok(draw_graph(&rows))
}

// ---------------------------------------------------------------------------
// helpers

fn resolve_target(repo: &Repository, root: &Path, target: &str) -> Result<Oid> {
    for name in [
        format!("refs/heads/{target}"),
        format!("refs/remotes/origin/{target}"),
    ] {
        match repo.find_reference(&name) {
            Ok(r) => {
                let commit = r
                    .peel_to_commit()
                    .with_context(|| format!("reading the head of {name} in {}", root.display()))?;
                return Ok(commit.id());
            }
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("looking up {name} in {}", root.display()))
            }
        }
    }
    match repo.revparse_single(target).and_then(|o| o.peel_to_commit()) {
        Ok(c) => Ok(c.id()),
        Err(_) => bail!(
            "branch {target} does not exist in {}\n  help: `git branch -a` lists the branches; pass the branch loki merges into (the target in loki.toml)",
            root.display()
        ),
    }
}

/// The commits `merge` (of stream `id`) brought in: reachable from its
/// second parent, not from its first, oldest first.
fn brought_in(repo: &Repository, root: &Path, merge: &Commit, id: &str) -> Result<Vec<CommitInfo>> {
    let ctx = || {
        format!(
            "reading the attempts of stream {id} (merge {}) in {}",
            merge.id(),
            root.display()
        )
    };
    let first = merge.parent_id(0).with_context(ctx)?;
    let second = merge.parent_id(1).with_context(ctx)?;
    let mut walk = repo.revwalk().with_context(ctx)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
        .with_context(ctx)?;
    walk.push(second).with_context(ctx)?;
    walk.hide(first).with_context(ctx)?;
    let mut out = Vec::new();
    for oid in walk {
        let oid = oid.with_context(ctx)?;
        let commit = repo.find_commit(oid).with_context(ctx)?;
        out.push(commit_info(&commit));
    }
    Ok(out)
}

fn commit_info(commit: &Commit) -> CommitInfo {
    let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
    CommitInfo {
        id: commit.id().to_string(),
        trailers: parse_trailers(&message),
        message,
        committed_at: commit_time(commit),
    }
}

fn subject(message: &str) -> &str {
    message.lines().next().unwrap_or("").trim()
}

/// Fallback: `Key: value` lines of the last paragraph, if every line is one.
fn last_paragraph_trailers(message: &str) -> Vec<(String, String)> {
    let text = message.trim_end();
    let last = text.rsplit("\n\n").next().unwrap_or("");
    let mut out = Vec::new();
    for line in last.lines() {
        let Some((k, v)) = line.split_once(':') else {
            return Vec::new();
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Vec::new();
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    out
}

/// Committer time as RFC 3339 in the committer's own offset.
fn commit_time(commit: &Commit) -> String {
    let t = commit.committer().when();
    let offset = chrono::FixedOffset::east_opt(t.offset_minutes() * 60)
        .or_else(|| chrono::FixedOffset::east_opt(0));
    match (chrono::DateTime::from_timestamp(t.seconds(), 0), offset) {
        (Some(utc), Some(off)) => utc
            .with_timezone(&off)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        _ => t.seconds().to_string(),
    }
}

/// Draws `rows` (commit, parents, text; children before parents) as git's
/// `--graph` does: each commit sits in a lane (`*`), other lanes pass by
/// (`|`). After a commit its parents take its place (a merge's other
/// parents widen the graph to its right, `\`); then lanes that now wait
/// for the same commit join the leftmost one, one column per line (`/`).
fn draw_graph<K: PartialEq + Copy>(rows: &[(K, Vec<K>, String)]) -> String {
    let mut out = String::new();
    let mut lanes: Vec<K> = Vec::new();
    for (commit, parents, text) in rows {
        let col = match lanes.iter().position(|l| l == commit) {
            Some(c) => c,
            None => {
                lanes.push(*commit);
                lanes.len() - 1
            }
        };
        // Widened: the commit's lane replaced by its parents.
        let mut widened: Vec<K> = Vec::new();
        let mut widen_edges = Vec::new();
        for (j, l) in lanes.iter().enumerate() {
            if j == col {
                for p in parents {
                    widen_edges.push((2 * j, 2 * widened.len()));
                    widened.push(*p);
                }
            } else {
                widen_edges.push((2 * j, 2 * widened.len()));
                widened.push(*l);
            }
        }
        // Collapsed: the first lane waiting for a commit keeps it.
        let mut next: Vec<K> = Vec::new();
        let mut collapse_edges = Vec::new();
        for (j, l) in widened.iter().enumerate() {
            let to = match next.iter().position(|n| n == l) {
                Some(t) => t,
                None => {
                    next.push(*l);
                    next.len() - 1
                }
            };
            collapse_edges.push((2 * j, 2 * to));
        }

        let width = 2 * lanes.len().max(widened.len());
        let mut line: String = (0..lanes.len())
            .map(|j| if j == col { "* " } else { "| " })
            .collect();
        while line.len() < width {
            line.push(' ');
        }
        out.push_str(&line);
        out.push_str(text);
        out.push('\n');
        draw_moves(&mut out, widen_edges, width);
        draw_moves(&mut out, collapse_edges, width);
        lanes = next;
    }
    out
}

/// Lines moving each edge (from, to; doubled columns) one step per line
/// until it arrives: `|` stays, `\` moves right, `/` moves left.
fn draw_moves(out: &mut String, mut edges: Vec<(usize, usize)>, width: usize) {
    while edges.iter().any(|(from, to)| from != to) {
        let mut row = vec![b' '; width.max(1)];
        for (from, to) in edges.iter_mut() {
            let (x, c) = match (*from).cmp(to) {
                std::cmp::Ordering::Equal => (*from, b'|'),
                std::cmp::Ordering::Less => {
                    *from += 2;
                    (*from - 1, b'\\')
                }
                std::cmp::Ordering::Greater => {
                    *from -= 2;
                    (*from + 1, b'/')
                }
            };
            if x < row.len() {
                row[x] = c;
            }
        }
        out.push_str(String::from_utf8_lossy(&row).trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_trailers_come_from_the_last_paragraph() {
        let fallback = last_paragraph_trailers("s\n\nbody\n\nA-B: 1\nC: two words\n");
        assert_eq!(
            fallback,
            vec![("A-B".into(), "1".into()), ("C".into(), "two words".into())]
        );
        assert!(last_paragraph_trailers("s\n\nnot a trailer\n").is_empty());
    }

    #[test]
    fn the_graph_is_drawn_as_git_draws_it() {
        let row = |c: u32, p: &[u32], t: &str| (c, p.to_vec(), t.to_string());
        // 4 merges 3 (on the side) into 2; 2 and 3 both come from 1.
        let rows = vec![
            row(4, &[2, 3], "4 Merge stream a"),
            row(3, &[1], "3 loki: a attempt 1"),
            row(2, &[1], "2 edit"),
            row(1, &[], "1 first"),
        ];
        assert_eq!(
            draw_graph(&rows),
            "*   4 Merge stream a\n|\\\n| * 3 loki: a attempt 1\n* | 2 edit\n|/\n* 1 first\n"
        );
        // A merge beside another lane: it widens, then the lanes waiting
        // for the same commit join (git draws exactly this).
        let rows = vec![
            row(6, &[5, 4], "6 Merge stream b"),
            row(4, &[1], "4 b"),
            row(5, &[1, 3], "5 Merge stream a"),
            row(3, &[1], "3 a"),
            row(1, &[], "1 first"),
        ];
        assert_eq!(
            draw_graph(&rows),
            "*   6 Merge stream b\n|\\\n| * 4 b\n* |   5 Merge stream a\n|\\ \\\n| |/\n|/|\n| * 3 a\n|/\n* 1 first\n"
        );
        let linear = vec![row(2, &[1], "2 b"), row(1, &[], "1 a")];
        assert_eq!(draw_graph(&linear), "* 2 b\n* 1 a\n");
    }
}
