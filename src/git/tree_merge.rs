//! Merges and diffs of trees that look only inside the folders that differ,
//! so a merge costs what the stream changed, not what the target holds.
//!
//! libgit2's `merge_commits` and `diff_tree_to_tree` walk every entry of
//! both trees; on a 5,000-file target that made loki's in-process merge
//! slower than `git merge` (whose ort strategy skips equal subtrees).
//!
//! Decisions worth knowing:
//!
//! - **Only the clean cases.** [`merge_by_subtree`] resolves a name when one
//!   side left it as the base had it (take the other side), or both sides
//!   made it the same, or both made it a folder (look inside). Anything else,
//!   a path changed on both sides, a file against a folder, a path both sides
//!   deleted (git may see a rename on each side), is no answer (`None`), and
//!   the caller falls back to libgit2's full merge, which finds the
//!   conflicts and renames. A clean answer here is the tree libgit2 would
//!   give: a rename can only change a merge's result where the other side
//!   touched the renamed path, and then that path differs on both sides.
//! - **Entries are (id, mode).** A change of mode alone is a change.

use std::collections::BTreeSet;

use git2::{Oid, Repository};

use super::tree_edit::{splice, Change, Spliced};

/// Git's mode of a tree entry that is a folder.
const MODE_TREE: i32 = 0o040000;

/// One tree entry: its object and its mode.
type Entry = (Oid, i32);

/// The tree of `theirs` merged into `ours` from their common `base`, when
/// it follows from the folders that differ alone (see the module doc);
/// `None` when libgit2's full merge must decide.
pub(super) fn merge_by_subtree(
    repo: &Repository,
    base: Oid,
    ours: Oid,
    theirs: Oid,
) -> Result<Option<Oid>, git2::Error> {
    merge_level(repo, Some(base), ours, theirs)
}

fn merge_level(
    repo: &Repository,
    base: Option<Oid>,
    ours: Oid,
    theirs: Oid,
) -> Result<Option<Oid>, git2::Error> {
    if ours == theirs || base == Some(theirs) {
        return Ok(Some(ours));
    }
    if base == Some(ours) {
        return Ok(Some(theirs));
    }
    let (b, o, t) = (
        tree(repo, base)?,
        tree(repo, Some(ours))?,
        tree(repo, Some(theirs))?,
    );
    let (be, oe, te) = (sorted(&b), sorted(&o), sorted(&t));
    let mut changes: Vec<(Vec<u8>, Change)> = Vec::new();
    let mut clean = true;
    join([&be, &oe, &te], |name, [be, oe, te]| {
        if oe == te {
            if be.is_some() && oe.is_none() {
                // Deleted on both sides: each may be a rename.
                clean = false;
            }
            return Ok(clean);
        }
        if be == te {
            return Ok(true); // only ours changed it: ours stays
        }
        let change = if be == oe {
            // Only theirs changed it.
            te
        } else {
            // Changed on both sides: only a folder on both (and in the
            // base, if there) is looked into.
            let (None | Some((_, MODE_TREE)), Some((o_id, MODE_TREE)), Some((t_id, MODE_TREE))) =
                (be, oe, te)
            else {
                clean = false;
                return Ok(false);
            };
            match merge_level(repo, be.map(|(id, _)| id), o_id, t_id)? {
                Some(id) => Some((id, MODE_TREE)),
                None => {
                    clean = false;
                    return Ok(false);
                }
            }
        };
        changes.push((name.to_vec(), change));
        Ok(true)
    })?;
    if !clean {
        return Ok(None);
    }
    if changes.is_empty() {
        // Every name as ours has it (theirs only repeated ours' changes).
        return Ok(Some(ours));
    }
    if let Some(Spliced::Tree(id)) = splice(repo, o.as_ref(), &changes)? {
        return Ok(Some(id));
    }
    // An unusual name or mode, or a folder left empty: libgit2 decides.
    let mut builder = repo.treebuilder(o.as_ref())?;
    for (name, change) in changes {
        match change {
            Some((id, mode)) => {
                builder.insert(name, id, mode)?;
            }
            None => builder.remove(name)?,
        }
    }
    builder.write().map(Some)
}

/// Every path whose entry differs between trees `a` and `b` (a file on
/// either side of each change, as the deltas of a tree-to-tree diff name
/// them), looking inside differing folders only.
pub(super) fn changed_paths(
    repo: &Repository,
    a: Oid,
    b: Oid,
) -> Result<BTreeSet<String>, git2::Error> {
    let mut out = BTreeSet::new();
    changes_at(repo, Some(a), Some(b), "", &mut out)?;
    Ok(out)
}

fn changes_at(
    repo: &Repository,
    a: Option<Oid>,
    b: Option<Oid>,
    prefix: &str,
    out: &mut BTreeSet<String>,
) -> Result<(), git2::Error> {
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (tree(repo, a)?, tree(repo, b)?);
    let (ea, eb) = (sorted(&ta), sorted(&tb));
    join([&ea, &eb], |name, [x, y]| {
        if x == y {
            return Ok(true);
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        let tree_of = |e: Option<Entry>| e.filter(|&(_, m)| m == MODE_TREE).map(|(id, _)| id);
        let (tx, ty) = (tree_of(x), tree_of(y));
        // A file (or link, or submodule) on either side is a path of its own.
        if (x.is_some() && tx.is_none()) || (y.is_some() && ty.is_none()) {
            out.insert(path.clone());
        }
        if tx.is_some() || ty.is_some() {
            changes_at(repo, tx, ty, &format!("{path}/"), out)?;
        }
        Ok(true)
    })
}

fn tree(repo: &Repository, id: Option<Oid>) -> Result<Option<git2::Tree<'_>>, git2::Error> {
    id.map(|id| repo.find_tree(id)).transpose()
}

/// A tree's entries (none for `None`), read in place, in byte order of
/// their names (git's own order puts a folder as if its name ended in '/').
fn sorted<'t>(tree: &'t Option<git2::Tree<'_>>) -> Vec<git2::TreeEntry<'t>> {
    let mut out: Vec<git2::TreeEntry<'t>> = tree.iter().flat_map(|t| t.iter()).collect();
    out.sort_by(|a, b| a.name_bytes().cmp(b.name_bytes()));
    out
}

/// Walks `N` name-sorted entry lists side by side: `f` gets each name in
/// any of them with its entry in each (`None` where absent), in name order,
/// until it returns `false`. No entry is copied: a folder of a thousand
/// outputs is compared in place.
fn join<const N: usize>(
    lists: [&[git2::TreeEntry<'_>]; N],
    mut f: impl FnMut(&[u8], [Option<Entry>; N]) -> Result<bool, git2::Error>,
) -> Result<(), git2::Error> {
    let mut at = [0usize; N];
    loop {
        let Some(name) = (0..N)
            .filter_map(|k| lists[k].get(at[k]).map(|e| e.name_bytes()))
            .min()
        else {
            return Ok(());
        };
        let mut here = [None; N];
        for k in 0..N {
            if let Some(e) = lists[k].get(at[k]).filter(|e| e.name_bytes() == name) {
                here[k] = Some((e.id(), e.filemode()));
                at[k] += 1;
            }
        }
        if !f(name, here)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::git::diff_paths;
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift), so a failure reruns.
    pub(in crate::git) struct Rng(pub(in crate::git) u64);
    impl Rng {
        pub(in crate::git) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Paths of a tree as a map (path → content), nested folders allowed.
    type Files = BTreeMap<String, String>;

    fn write_tree(repo: &Repository, files: &Files) -> Oid {
        let mut index = git2::Index::new().unwrap();
        for (path, text) in files {
            let blob = repo.blob(text.as_bytes()).unwrap();
            let mode = if path.ends_with(".sh") {
                0o100755
            } else {
                0o100644
            };
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: text.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        index.write_tree_to(repo).unwrap()
    }

    fn commit(repo: &Repository, tree: Oid, parents: &[Oid]) -> Oid {
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let parents: Vec<git2::Commit> = parents
            .iter()
            .map(|p| repo.find_commit(*p).unwrap())
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "c", &tree, &refs).unwrap()
    }

    /// One side's edits: change, add (in a folder or a new one), delete,
    /// turn a file into a folder, change a mode.
    fn edit(rng: &mut Rng, files: &Files, side: &str) -> Files {
        let mut out = files.clone();
        let keys: Vec<String> = files.keys().cloned().collect();
        for n in 0..1 + rng.below(4) {
            let pick = keys
                .get(rng.below(keys.len().max(1) as u64) as usize)
                .cloned();
            match (rng.below(7), pick) {
                (0 | 1, Some(k)) => {
                    out.insert(k, format!("{side} {n}"));
                }
                (2, Some(k)) => {
                    out.remove(&k);
                }
                (3, Some(k)) => {
                    out.remove(&k);
                    out.insert(format!("{k}/inner.md"), format!("{side} {n}"));
                }
                (4, Some(k)) if !k.ends_with(".sh") => {
                    let text = out.remove(&k).unwrap_or_default();
                    out.insert(format!("{k}.sh"), text);
                }
                (5, _) => {
                    out.insert(
                        format!("d{}/new{}.md", rng.below(3), rng.below(3)),
                        side.into(),
                    );
                }
                _ => {
                    out.insert(format!("top{}.md", rng.below(4)), format!("{side} {n}"));
                }
            }
        }
        out
    }

    #[test]
    fn a_merge_by_subtree_is_the_tree_libgit2_gives_or_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let (mut quick, mut fallback) = (0, 0);
        for _ in 0..400 {
            let mut base = Files::new();
            for i in 0..rng.below(8) {
                base.insert(format!("d{}/f{i}.md", rng.below(3)), format!("base {i}"));
            }
            base.insert("README.md".into(), "base".into());
            let (ours, theirs) = (
                edit(&mut rng, &base, "ours"),
                edit(&mut rng, &base, "theirs"),
            );
            let b = commit(&repo, write_tree(&repo, &base), &[]);
            let o = commit(&repo, write_tree(&repo, &ours), &[b]);
            let t = commit(&repo, write_tree(&repo, &theirs), &[b]);
            let tree_of = |c: Oid| repo.find_commit(c).unwrap().tree_id();
            let got = merge_by_subtree(&repo, tree_of(b), tree_of(o), tree_of(t)).unwrap();
            let (oc, tc) = (repo.find_commit(o).unwrap(), repo.find_commit(t).unwrap());
            let mut index = repo.merge_commits(&oc, &tc, None).unwrap();
            match got {
                Some(tree) => {
                    quick += 1;
                    assert!(!index.has_conflicts(), "{base:?}\n{ours:?}\n{theirs:?}");
                    assert_eq!(
                        tree,
                        index.write_tree_to(&repo).unwrap(),
                        "{base:?}\n{ours:?}\n{theirs:?}"
                    );
                }
                None => fallback += 1,
            }
            // The changed paths are the deltas' paths of libgit2's diff.
            for (x, y) in [(b, o), (o, t), (t, b)] {
                let (xt, yt) = (repo.find_commit(x).unwrap().tree().unwrap(), {
                    repo.find_commit(y).unwrap().tree().unwrap()
                });
                let diff = repo.diff_tree_to_tree(Some(&xt), Some(&yt), None).unwrap();
                assert_eq!(
                    changed_paths(&repo, xt.id(), yt.id()).unwrap(),
                    diff_paths(&diff)
                );
            }
        }
        // Both ways are exercised.
        assert!(
            quick > 100 && fallback > 50,
            "quick {quick}, fallback {fallback}"
        );
    }
}
