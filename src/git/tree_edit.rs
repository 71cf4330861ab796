//! Writing a tree as a base tree with a few entries changed: every other
//! entry is copied as the base holds it, in its order, and nothing is
//! validated, sorted or hashed again except the entries that changed.
//!
//! libgit2 writes a tree through a tree builder: each entry of the folder
//! is copied into a hash map, checked, sorted and written out, and an index
//! is then read back into its tree cache. With a folder of a thousand
//! outputs that cost ten times the hash and compression of the tree object
//! itself, on every staging and every merge.
//!
//! Decisions worth knowing:
//!
//! - **Only what libgit2 would write the same way.** A changed entry is
//!   written here only when its name and mode are ordinary (see
//!   [`plain_name`], [`plain_mode`]); anything else, and a file that became
//!   a folder or the other way round while staging, makes [`splice`] or
//!   [`staged_tree`] answer `None`, and the caller writes the tree with
//!   libgit2, which validates and refuses what it must.
//! - **The base's entries are taken as they are**, names and modes: they
//!   are already in the repository, and libgit2's tree builder does not
//!   check them again either. Only their order is checked: a base out of
//!   git's order (an agent can commit a hand-made tree) goes to libgit2,
//!   which sorts.
//! - **Git's order.** Names compare as bytes, a folder's as if it ended in
//!   '/'.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{Index, ObjectType, Oid, Repository, Tree};

/// Git's mode of a tree entry that is a folder.
const MODE_TREE: i32 = 0o040000;

/// A new entry for a name (`None` removes it).
pub(super) type Change = Option<(Oid, i32)>;

/// What writing one folder gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spliced {
    /// The folder's tree (the base's own id when nothing changed).
    Tree(Oid),
    /// Nothing is left in the folder: git stores no empty folder.
    Empty,
}

/// `base` (no tree: an empty folder) with `changes` applied, name by name;
/// `None` when a change is one libgit2 must write (see the module doc), or
/// a name comes twice (a file that became a folder, or the other way).
pub(super) fn splice<N: AsRef<[u8]>>(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    changes: &[(N, Change)],
) -> Result<Option<Spliced>, git2::Error> {
    let mut adds: Vec<(&[u8], Oid, i32)> = Vec::with_capacity(changes.len());
    for (name, change) in changes {
        let (name, change) = (name.as_ref(), *change);
        if !plain_name(name) {
            return Ok(None);
        }
        if let Some((id, mode)) = change {
            if !plain_mode(mode) {
                return Ok(None);
            }
            adds.push((name, id, mode));
        }
    }
    adds.sort_by(|a, b| git_order(a.0, a.2 == MODE_TREE, b.0, b.2 == MODE_TREE));
    let mut gone: Vec<&[u8]> = changes.iter().map(|(name, _)| name.as_ref()).collect();
    gone.sort_unstable();
    if gone.windows(2).any(|w| w[0] == w[1]) {
        return Ok(None);
    }

    let mut out = Vec::with_capacity(base.map_or(0, |t| t.len() * 48) + adds.len() * 64);
    let mut count = 0usize;
    let mut same = true;
    let mut next = adds.iter().peekable();
    let mut last: Option<git2::TreeEntry<'_>> = None;
    for entry in base.iter().flat_map(|t| t.iter()) {
        let name = entry.name_bytes();
        let (mode, is_tree) = (entry.filemode_raw(), entry.filemode_raw() == MODE_TREE);
        // A base out of git's order (an agent's hand-made tree): the
        // changes' places in it are not defined, and libgit2 sorts.
        if let Some(prev) = &last {
            let prev_tree = prev.filemode_raw() == MODE_TREE;
            if !git_order(prev.name_bytes(), prev_tree, name, is_tree).is_lt() {
                return Ok(None);
            }
        }
        while let Some(&&(n, id, m)) = next
            .peek()
            .filter(|a| git_order(a.0, a.2 == MODE_TREE, name, is_tree).is_lt())
        {
            push(&mut out, n, id, m);
            count += 1;
            same = false;
            next.next();
        }
        if gone.binary_search(&name).is_ok() {
            same = false;
            continue;
        }
        push(&mut out, name, entry.id(), mode);
        count += 1;
        last = Some(entry);
    }
    for &(n, id, m) in next {
        push(&mut out, n, id, m);
        count += 1;
        same = false;
    }
    if count == 0 {
        return Ok(Some(Spliced::Empty));
    }
    if let (true, Some(t)) = (same, base) {
        return Ok(Some(Spliced::Tree(t.id())));
    }
    let id = repo.odb()?.write(ObjectType::Tree, &out)?;
    Ok(Some(Spliced::Tree(id)))
}

/// The tree of `index` where it differs from `base` only at `changed`
/// (paths relative to the worktree, as `add_all` reported them): `base`
/// with the index's entry at each of them written in, or the path removed
/// when the index has none. `None` when libgit2 must write it: a path the
/// index holds a folder at, a file where `base` has a folder on the way,
/// or a change [`splice`] leaves to libgit2.
pub(super) fn staged_tree(
    repo: &Repository,
    index: &Index,
    base: Oid,
    changed: &[Vec<u8>],
) -> Result<Option<Oid>, git2::Error> {
    let mut items: BTreeMap<&[u8], Change> = BTreeMap::new();
    for path in changed {
        let path = path.strip_suffix(b"/").unwrap_or(path);
        if path.is_empty() {
            return Ok(None);
        }
        match index.get_path(Path::new(OsStr::from_bytes(path)), 0) {
            Some(e) => {
                items.insert(path, Some((e.id, e.mode as i32)));
            }
            None => {
                let mut under = path.to_vec();
                under.push(b'/');
                if index.find_prefix(under.as_slice()).is_ok() {
                    return Ok(None);
                }
                items.insert(path, None);
            }
        }
    }
    let items: Vec<(&[u8], Change)> = items.into_iter().collect();
    let root = repo.find_tree(base)?;
    Ok(match write_level(repo, Some(&root), &items)? {
        Some(Spliced::Tree(id)) => Some(id),
        // An empty root: libgit2 writes git's empty tree.
        Some(Spliced::Empty) | None => None,
    })
}

/// One folder of [`staged_tree`]: `items` are paths relative to it, in
/// byte order, so those under one sub-folder are next to one another.
fn write_level(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    items: &[(&[u8], Change)],
) -> Result<Option<Spliced>, git2::Error> {
    let mut level: Vec<(&[u8], Change)> = Vec::new();
    let mut at = 0;
    while at < items.len() {
        let (path, change) = items[at];
        // A path and one below it (a file that became a folder) give one
        // name twice, which `splice` leaves to libgit2.
        let Some(slash) = path.iter().position(|&c| c == b'/') else {
            level.push((path, change));
            at += 1;
            continue;
        };
        let name = &path[..slash];
        let mut end = at;
        let mut below: Vec<(&[u8], Change)> = Vec::new();
        while let Some(&(p, c)) = items.get(end) {
            match p.strip_prefix(name).and_then(|r| r.strip_prefix(b"/")) {
                Some(rest) => below.push((rest, c)),
                None => break,
            }
            end += 1;
        }
        let sub = match base.map(|t| t.get_name_bytes(name)) {
            Some(Some(e)) if e.filemode_raw() == MODE_TREE => Some(repo.find_tree(e.id())?),
            Some(Some(_)) => return Ok(None), // a file on the way
            _ => None,
        };
        match write_level(repo, sub.as_ref(), &below)? {
            Some(Spliced::Tree(id)) => level.push((name, Some((id, MODE_TREE)))),
            Some(Spliced::Empty) => level.push((name, None)),
            None => return Ok(None),
        }
        at = end;
    }
    splice(repo, base, &level)
}

fn push(out: &mut Vec<u8>, name: &[u8], id: Oid, mode: i32) {
    use std::io::Write;
    let _ = write!(out, "{mode:o} ");
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(id.as_bytes());
}

/// Git's order of tree entries: by name, a folder's as if it ended in '/'.
fn git_order(a: &[u8], a_tree: bool, b: &[u8], b_tree: bool) -> Ordering {
    let n = a.len().min(b.len());
    match a[..n].cmp(&b[..n]) {
        Ordering::Equal => {}
        other => return other,
    }
    let end = |name: &[u8], tree: bool| match name.get(n) {
        Some(&c) => c,
        None if tree => b'/',
        None => 0,
    };
    end(a, a_tree).cmp(&end(b, b_tree))
}

/// A name any checkout takes as it is: not empty, no '/', NUL or '\\', not
/// `.` or `..`, and nothing git protects on some file system (`.git` in
/// any case or with anything after it, 8.3 short names, a trailing dot or
/// space, ':'). Anything else goes to libgit2's own checks.
fn plain_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name
            .iter()
            .any(|c| matches!(c, b'/' | 0 | b'\\' | b':' | b'~'))
        && !name.ends_with(b".")
        && !name.ends_with(b" ")
        && !(name.len() >= 4 && name[..4].eq_ignore_ascii_case(b".git"))
}

/// The modes git writes: folder, file, executable, link, submodule.
fn plain_mode(mode: i32) -> bool {
    matches!(mode, 0o040000 | 0o100644 | 0o100755 | 0o120000 | 0o160000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_order_puts_a_folder_after_a_file_with_a_longer_name() {
        // "a.md" < "a/" < "a0": '.' (0x2e) < '/' (0x2f) < '0' (0x30).
        assert!(git_order(b"a.md", false, b"a", true).is_lt());
        assert!(git_order(b"a", true, b"a0", false).is_lt());
        assert!(git_order(b"a", false, b"a.md", false).is_lt());
        assert!(git_order(b"a", false, b"a", true).is_lt());
    }

    #[test]
    fn unusual_names_go_to_libgit2() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b".git",
            b".GIT",
            b".gitmodules",
            b"git~1",
            b"a/b",
            b"a\\b",
            b"a.",
            b"a ",
            b"c:",
        ] {
            assert!(!plain_name(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(plain_name(b"chapter-01.md"));
        assert!(plain_name("Καλημέρα.md".as_bytes()));
    }

    use crate::git::tree_merge::tests::Rng;

    /// A tree out of git's order (as an agent can write one by hand) is
    /// left to libgit2, which sorts it; the same entries in order splice.
    #[test]
    fn a_base_out_of_order_goes_to_libgit2() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let blob = repo.blob(b"x\n").unwrap();
        let raw = |names: &[&str]| {
            let mut out = Vec::new();
            for n in names {
                push(&mut out, n.as_bytes(), blob, 0o100644);
            }
            repo.odb().unwrap().write(ObjectType::Tree, &out).unwrap()
        };
        let change: [(&[u8], Change); 1] = [(b"b.md", Some((blob, 0o100644)))];
        let unsorted = repo.find_tree(raw(&["c.md", "a.md"])).unwrap();
        assert_eq!(splice(&repo, Some(&unsorted), &change).unwrap(), None);
        let sorted = repo.find_tree(raw(&["a.md", "c.md"])).unwrap();
        let Some(Spliced::Tree(id)) = splice(&repo, Some(&sorted), &change).unwrap() else {
            panic!("a sorted base splices");
        };
        let names: Vec<String> = repo
            .find_tree(id)
            .unwrap()
            .iter()
            .map(|e| e.name().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.md", "b.md", "c.md"]);
        // A name twice (a file and a folder of the same name): libgit2's.
        let twice: [(&[u8], Change); 2] = [
            (b"b.md", Some((blob, 0o100644))),
            (b"b.md", Some((sorted.id(), MODE_TREE))),
        ];
        assert_eq!(splice(&repo, Some(&sorted), &twice).unwrap(), None);
    }

    fn below(rng: &mut Rng, n: usize) -> usize {
        rng.below(n as u64) as usize
    }

    /// Names chosen to sit on both sides of a folder in git's order
    /// ("a.md" < "a/" < "a0"), at several depths.
    const NAMES: [&str; 8] = ["a", "a.md", "a0", "b", "b-2.md", "c.sh", "z", "Ωmega.md"];

    fn random_path(rng: &mut Rng) -> String {
        let depth = 1 + below(rng, 3);
        (0..depth)
            .map(|_| NAMES[below(rng, NAMES.len())])
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Writes `rel` as a file, unless a file or folder is in the way.
    fn put(root: &std::path::Path, rel: &str, text: &str) {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            if std::fs::create_dir_all(dir).is_err() {
                return;
            }
        }
        if path.is_dir() {
            return;
        }
        std::fs::write(&path, text).unwrap();
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn files_under(root: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if e.file_name() == ".git" {
                    continue;
                }
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    dirs.push(p);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    /// Random edits on disk (change, add at any depth, delete, a file
    /// turned into a folder and back, a mode, a link), staged as
    /// `stage_stream` stages them: whenever the spliced tree has an answer,
    /// it is the tree libgit2 writes from the same index.
    #[test]
    fn the_spliced_tree_is_the_tree_libgit2_writes() {
        let mut rng = Rng(0x5eed_1e55_0bad_cafe);
        let mut answered = 0;
        for round in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let repo = Repository::init(root).unwrap();
            for n in 0..1 + below(&mut rng, 12) {
                put(root, &random_path(&mut rng), &format!("base {n}"));
            }
            let mut index = repo.index().unwrap();
            index
                .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
                .unwrap();
            let base = index.write_tree().unwrap();

            let existing = files_under(root);
            for n in 0..1 + below(&mut rng, 5) {
                let pick = existing
                    .get(below(&mut rng, existing.len().max(1)))
                    .cloned();
                match (below(&mut rng, 7), pick) {
                    // A path picked twice may be gone or a folder by now.
                    (0 | 1, Some(p)) => {
                        if root.join(&p).is_file() {
                            std::fs::write(root.join(&p), format!("edit {round} {n}")).unwrap();
                        }
                    }
                    (2, Some(p)) => {
                        let _ = std::fs::remove_file(root.join(&p));
                    }
                    (3, Some(p)) => {
                        if std::fs::remove_file(root.join(&p)).is_ok() {
                            put(root, &format!("{p}/inner.md"), "now a folder");
                        }
                    }
                    (4, Some(p)) => {
                        use std::os::unix::fs::PermissionsExt;
                        let _ = std::fs::set_permissions(
                            root.join(&p),
                            std::fs::Permissions::from_mode(0o755),
                        );
                    }
                    (5, Some(p)) => {
                        if std::fs::remove_file(root.join(&p)).is_ok() {
                            std::os::unix::fs::symlink("a.md", root.join(&p)).unwrap();
                        }
                    }
                    _ => put(root, &random_path(&mut rng), &format!("new {round} {n}")),
                }
            }

            let own = root.join(".git/loki-test-index");
            let mut index = Index::open(&own).unwrap();
            index.read_tree(&repo.find_tree(base).unwrap()).unwrap();
            repo.set_index(&mut index).unwrap();
            let mut changed: Vec<Vec<u8>> = Vec::new();
            let mut note = |p: &Path, _: &[u8]| {
                changed.push(p.as_os_str().as_bytes().to_vec());
                0
            };
            index
                .add_all(["*"], git2::IndexAddOption::DEFAULT, Some(&mut note))
                .unwrap();
            let spliced = staged_tree(&repo, &index, base, &changed).unwrap();
            let libgit2 = index.write_tree_to(&repo).unwrap();
            if let Some(tree) = spliced {
                answered += 1;
                assert_eq!(tree, libgit2, "round {round}: changed {changed:?}");
            }
        }
        // Most rounds have no file turned into a folder: the splice answers.
        assert!(answered >= 30, "only {answered} of 60 rounds were spliced");
    }
}
