//! Reading a branch's tree without a checkout, for the swarm file's checks:
//! a stream's worktree starts as exactly this tree, so what the tree holds
//! (not the user's checkout) is what an input or a check script can rely on.

use std::path::{Path, PathBuf};

/// Git file modes of tree entries.
const MODE_TREE: i32 = 0o040000;
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_COMMIT: i32 = 0o160000;

/// What a path names in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeEntry {
    Folder,
    /// A file with git's executable bit.
    Executable,
    Symlink,
    /// A plain file, or anything else (a submodule's commit).
    Other,
}

/// A local branch's tree, opened once and asked about many paths.
pub struct BranchTree {
    repo: git2::Repository,
    tree: git2::Oid,
    branch: String,
    root: PathBuf,
}

impl BranchTree {
    /// The tree of `target` (the branch checked out in the main worktree
    /// when `None`) of the repository at `root`. `None` when there is no
    /// such branch, no repository, or a detached HEAD and no `target`.
    pub fn open(root: &Path, target: Option<&str>) -> Option<BranchTree> {
        let repo = git2::Repository::open(root).ok()?;
        let branch = match target {
            Some(t) => t.to_string(),
            None => super::current_branch(root).ok()??,
        };
        let tree = repo
            .find_branch(&branch, git2::BranchType::Local)
            .ok()?
            .get()
            .peel_to_tree()
            .ok()?
            .id();
        Some(BranchTree {
            repo,
            tree,
            branch,
            root: root.to_path_buf(),
        })
    }

    /// The branch's name.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The repository's root (the main worktree, the user's checkout).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What `rel` (a `/`-separated path from the tree's root) is in the
    /// tree; `None` when it is not there.
    pub fn entry(&self, rel: &str) -> Option<TreeEntry> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        Some(match entry.filemode() {
            MODE_TREE => TreeEntry::Folder,
            MODE_EXEC => TreeEntry::Executable,
            MODE_LINK => TreeEntry::Symlink,
            _ => TreeEntry::Other,
        })
    }

    /// The size in bytes of the file `rel`, read from the object's header
    /// (the content is not loaded); `None` when it is not a file there.
    pub fn file_size(&self, rel: &str) -> Option<u64> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        let (size, kind) = self.repo.odb().ok()?.read_header(entry.id()).ok()?;
        (kind == git2::ObjectType::Blob).then_some(size as u64)
    }

    /// The object id of what `rel` names in the tree, if anything.
    pub fn object_id(&self, rel: &str) -> Option<String> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        Some(entry.id().to_string())
    }

    /// The contents of the regular file `rel` (not a link, not a folder),
    /// at most `limit` bytes; `None` when it is not such a file there.
    pub fn read(&self, rel: &str, limit: u64) -> Option<Vec<u8>> {
        if self.link_on_path(rel).is_some() {
            return None;
        }
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        if entry.filemode() == MODE_TREE || entry.filemode() == MODE_LINK {
            return None;
        }
        if self.file_size(rel)? > limit {
            return None;
        }
        let blob = self.repo.find_blob(entry.id()).ok()?;
        Some(blob.content().to_vec())
    }

    /// The regular files of the tree whose path matches the glob `pattern`
    /// ([`crate::util::glob_match`]), in path order. Only the pattern's
    /// fixed leading folders are walked; links are not followed (and not
    /// listed).
    pub fn files_matching(&self, pattern: &str) -> Vec<String> {
        let Ok(root) = self.repo.find_tree(self.tree) else {
            return Vec::new();
        };
        let base = crate::util::glob_base(pattern);
        let start = if base.is_empty() {
            root
        } else {
            match root
                .get_path(Path::new(&base))
                .ok()
                .filter(|e| e.filemode() == MODE_TREE)
                .and_then(|e| self.repo.find_tree(e.id()).ok())
            {
                Some(t) => t,
                None => return Vec::new(),
            }
        };
        let mut out = Vec::new();
        let _ = start.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let mode = entry.filemode();
            if mode == MODE_TREE || mode == MODE_LINK || mode == MODE_COMMIT {
                return git2::TreeWalkResult::Ok;
            }
            let Some(name) = entry.name() else {
                return git2::TreeWalkResult::Ok;
            };
            let mut rel = base.clone();
            for part in [dir.trim_end_matches('/'), name] {
                if !part.is_empty() {
                    if !rel.is_empty() {
                        rel.push('/');
                    }
                    rel.push_str(part);
                }
            }
            if crate::util::glob_match(pattern, &rel) {
                out.push(rel);
            }
            git2::TreeWalkResult::Ok
        });
        out.sort();
        out
    }

    /// The first symlink on the way to `rel` (`rel` itself included): its
    /// path and what it points to. What a worktree checks out of such a
    /// path is a link, not a file of the tree.
    pub fn link_on_path(&self, rel: &str) -> Option<(String, String)> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let mut at = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            let entry = tree.get_path(Path::new(&at)).ok()?;
            if entry.filemode() == MODE_LINK {
                let blob = self.repo.find_blob(entry.id()).ok()?;
                return Some((at, String::from_utf8_lossy(blob.content()).into_owned()));
            }
        }
        None
    }
}

/// True when `name` may name a local branch (`refs/heads/<name>` is a valid
/// reference name).
pub fn valid_branch_name(name: &str) -> bool {
    !name.contains('\0') && git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

/// Writes the files of `commit`'s tree into the new folder `dest` (a
/// validator's disposable checkout): regular and executable files only. A
/// symlink is not made (an agent could have committed one pointing out of
/// the repository), nor a submodule; no `.git` is made, so nothing written
/// in `dest` can reach a branch. Returns the number of files written.
pub fn export_commit(root: &Path, commit: &str, dest: &Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let repo = super::open_repo(root)?;
    let ctx = || format!("writing commit {commit} into {}", dest.display());
    let tree = git2::Oid::from_str(commit)
        .and_then(|o| repo.find_commit(o))
        .and_then(|c| c.tree())
        .with_context(ctx)?;
    std::fs::create_dir_all(dest).with_context(ctx)?;
    let mut files: Vec<(String, git2::Oid, i32)> = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let mode = entry.filemode();
        if mode == MODE_TREE {
            return git2::TreeWalkResult::Ok;
        }
        if mode == MODE_LINK || mode == MODE_COMMIT {
            return git2::TreeWalkResult::Ok;
        }
        if let Some(name) = entry.name() {
            files.push((format!("{dir}{name}"), entry.id(), mode));
        }
        git2::TreeWalkResult::Ok
    })
    .with_context(ctx)?;
    let mut n = 0;
    for (rel, oid, mode) in files {
        // Git's own names never hold `..` or a `.git` component; a tree
        // made by hand could: such a path is left out.
        let path = Path::new(&rel);
        let plain = path.components().all(|c| match c {
            std::path::Component::Normal(s) => s != ".git",
            _ => false,
        });
        if !plain {
            continue;
        }
        let blob = repo.find_blob(oid).with_context(ctx)?;
        let to = dest.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(ctx)?;
        }
        std::fs::write(&to, blob.content()).with_context(ctx)?;
        if mode == MODE_EXEC {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                .with_context(ctx)?;
        }
        n += 1;
    }
    Ok(n)
}
