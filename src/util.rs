//! Small helpers shared by several modules: atomic file writes, time stamps,
//! duration formatting, and the one bounded read of a file inside a
//! repository ([`read_inside`]).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsync, rename over the target. A crash leaves either the old or the new
/// content, never a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = synced_temp(path, bytes, None)?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Creates `path` with `bytes`, never replacing anything already there
/// (`AlreadyExists`), with the permissions any editor would give a new
/// file: 0666 less the process's umask. Written to a temporary file first
/// and linked into place, so a crash leaves no half-written file.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = synced_temp(path, bytes, Some(0o666 & !umask()))?;
    fs::hard_link(tmp.path(), path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// `bytes` in a temporary file beside `path` (its folder made if need
/// be), with `mode` when given, synced to disk.
fn synced_temp(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(tmp)
}

/// The regular files under `root`'s folder `start` (`""`: all of it), as
/// `/`-separated paths relative to `root`, sorted. Links are neither listed
/// nor entered, and `.git` is skipped: what a stream's worktree holds.
pub fn files_under(root: &Path, start: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![start.to_string()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let Ok(entries) = fs::read_dir(&abs) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(r),
                Ok(t) if t.is_file() => out.push(r),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The process's file mode creation mask, read from `/proc/self/status`
/// (setting it to read it would race with other threads); 022 when that
/// cannot be read.
pub fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// The sum of `costs`, never `-0.0`: `Iterator::sum` of no `f64` is `-0.0`,
/// which prints as "$-0.00".
pub fn total(costs: impl IntoIterator<Item = f64>) -> f64 {
    costs.into_iter().fold(0.0, |a, b| a + b)
}

/// Now, as an RFC 3339 string in UTC (what state files and events carry).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `4m12s`, `1h03m`, `12s`: short human durations for status lines.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Seconds between two RFC 3339 stamps, if both parse.
pub fn secs_between(from: &str, to: &str) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// FNV-1a: a small hash that is the same on every run and platform (for
/// names and record keys, never for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Trailer values must be one line.
pub fn one_line(s: &str) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The most loki reads of a file that feeds a prompt (a template, an
/// input, `prompts/retry.md`): a prompt is sent whole, and a larger file is
/// a mistake (or `/dev/zero`) that would fill the memory.
pub const MAX_PROMPT_FILE: u64 = 8 * 1024 * 1024;

/// The most loki reads of an output to check it.
pub const MAX_OUTPUT_FILE: u64 = 64 * 1024 * 1024;

/// What [`FileRefusal::NotFile`] says of a folder (match on it).
pub const FOLDER: &str = "a folder";

/// Why a file inside a repository may not be read (see [`check_inside`]).
#[derive(Debug)]
pub enum FileRefusal {
    /// Nothing there (or a component on the way is not a folder).
    Missing,
    /// `link` (relative to the root) is a symlink to `target`.
    Symlink {
        link: PathBuf,
        target: PathBuf,
    },
    /// The path is not a regular file: "a folder", "a FIFO (named pipe)"…
    NotFile(&'static str),
    /// Larger than the limit, in bytes.
    TooLarge(u64),
    /// The path is absolute, or has `..` or no file name.
    NotRelative,
    /// The path leads out of the repository (see [`read_under`]).
    Outside,
    Io(std::io::Error),
}

impl std::fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileRefusal::Missing => f.write_str("does not exist"),
            FileRefusal::Symlink { link, target } => write!(
                f,
                "is reached through a symlink: `{}` points to `{}` (a symlink anywhere on the \
                 path is refused)",
                link.display(),
                target.display()
            ),
            FileRefusal::NotFile(kind) => write!(f, "is {kind}, not a regular file"),
            FileRefusal::TooLarge(limit) => {
                write!(f, "is larger than {} MiB", limit / (1024 * 1024))
            }
            FileRefusal::NotRelative => f.write_str("is not a relative path inside the repository"),
            FileRefusal::Outside => f.write_str("is outside the repository"),
            FileRefusal::Io(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

/// What a file type is, for a refusal: "a folder", "a FIFO (named pipe)"…;
/// `None` for a regular file.
fn not_a_file(t: fs::FileType) -> Option<&'static str> {
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        FOLDER
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a special file"
    })
}

/// `rel` under `root` is a regular file reached without a symlink: each
/// component is looked at with `symlink_metadata`, so nothing is followed
/// and nothing is opened (a FIFO cannot block). The root itself is the
/// caller's and may lie behind links. Returns the file's metadata.
pub fn check_inside(root: &Path, rel: &Path) -> Result<fs::Metadata, FileRefusal> {
    let mut at = PathBuf::new();
    let mut parts = rel.components().peekable();
    if parts.peek().is_none() {
        return Err(FileRefusal::NotRelative);
    }
    while let Some(c) = parts.next() {
        match c {
            Component::Normal(n) => at.push(n),
            Component::CurDir => continue,
            _ => return Err(FileRefusal::NotRelative),
        }
        let full = root.join(&at);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FileRefusal::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(FileRefusal::Missing),
            Err(e) => return Err(FileRefusal::Io(e)),
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).unwrap_or_default();
            return Err(FileRefusal::Symlink { link: at, target });
        }
        if parts.peek().is_some() {
            if !meta.is_dir() {
                return Err(FileRefusal::Missing);
            }
            continue;
        }
        return match not_a_file(meta.file_type()) {
            Some(kind) => Err(FileRefusal::NotFile(kind)),
            None => Ok(meta),
        };
    }
    Err(FileRefusal::NotRelative)
}

/// Reads `rel` under `root` when [`check_inside`] allows it and it holds
/// at most `limit` bytes. Opened without following a link and without
/// blocking, and checked again once open, so a file swapped for a FIFO or a
/// link in between is refused too.
pub fn read_inside(root: &Path, rel: &Path, limit: u64) -> Result<Vec<u8>, FileRefusal> {
    let meta = check_inside(root, rel)?;
    if meta.len() > limit {
        return Err(FileRefusal::TooLarge(limit));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(root.join(rel))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FileRefusal::NotFile("a symlink"),
            Some(libc::ENOENT) => FileRefusal::Missing,
            _ => FileRefusal::Io(e),
        })?;
    let meta = file.metadata().map_err(FileRefusal::Io)?;
    if let Some(kind) = not_a_file(meta.file_type()) {
        return Err(FileRefusal::NotFile(kind));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(FileRefusal::Io)?;
    if bytes.len() as u64 > limit {
        return Err(FileRefusal::TooLarge(limit));
    }
    Ok(bytes)
}

/// `path` (relative to `base`, or absolute) as a path relative to `root`
/// with only normal components, when it lies inside `root`; `..` is resolved
/// by the letter, which is what [`read_inside`] then reads. `base` and
/// `root` should be spelt alike (both canonical).
pub fn inside(root: &Path, base: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    let rel = out.strip_prefix(root).ok()?;
    (rel.components().next().is_some()).then(|| rel.to_path_buf())
}

/// Reads `path` (relative to the folder `base`, or absolute) when it lies
/// inside `root` and [`read_inside`] allows it there; the path relative to
/// `root` comes back too. Both folders are made canonical first, so a
/// checkout reached through a link of the user's still matches.
pub fn read_under(
    root: &Path,
    base: &Path,
    path: &Path,
    limit: u64,
) -> Result<(PathBuf, Vec<u8>), FileRefusal> {
    let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let root = canonical(root);
    let rel = inside(&root, &canonical(base), path).ok_or(FileRefusal::Outside)?;
    let bytes = read_inside(&root, &rel, limit)?;
    Ok((rel, bytes))
}

/// True when `s` is a glob pattern (it has `*`, `?` or `[`): an input or a
/// `for_each` source that names a set of files rather than one.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The folder part of `pattern` before its first segment with a glob
/// character (`chapters/ch*/draft.md` → `chapters`): the only place a
/// search for its files needs to look.
pub fn glob_base(pattern: &str) -> String {
    let mut base: Vec<&str> = Vec::new();
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if is_glob(part) || i + 1 == parts.len() {
            break;
        }
        base.push(part);
    }
    base.join("/")
}

/// Whether the `/`-separated relative `path` matches `pattern`: `*` is any
/// run of characters within one segment, `?` one character, `[abc]`,
/// `[a-z]` and `[!a]` one character of (or not of) a set, and a whole
/// segment `**` any number of segments. Everything else matches itself,
/// case-sensitively, as git paths do.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|k| match_segments(rest, &segs[k..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, more)) => {
                let pc: Vec<char> = p.chars().collect();
                let sc: Vec<char> = s.chars().collect();
                match_segment(&pc, &sc) && match_segments(rest, more)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[char], s: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('*', rest)) => (0..=s.len()).any(|k| match_segment(rest, &s[k..])),
        Some(('?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some(('[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                // No closing bracket: a literal `[`.
                return s.first() == Some(&'[') && match_segment(rest, &s[1..]);
            };
            let Some(&c) = s.first() else {
                return false;
            };
            let (negate, set) = match rest[..close].split_first() {
                Some(('!', set)) | Some(('^', set)) => (true, set),
                _ => (false, &rest[..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_segment(&rest[close + 1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

/// `text` as a key of an id: lowercase ASCII letters and digits, every
/// other run of characters one `-`, none at either end (`Sarah Chen` →
/// `sarah-chen`). Letters outside ASCII are dropped into the `-` runs, so
/// a key can be empty: the caller refuses that.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_match_within_and_across_segments() {
        assert!(glob_match(
            "outputs/character_*.md",
            "outputs/character_sarah.md"
        ));
        assert!(!glob_match(
            "outputs/character_*.md",
            "outputs/x/character_sarah.md"
        ));
        assert!(!glob_match("outputs/*.md", "outputs/a.txt"));
        assert!(glob_match("ch??.md", "ch01.md"));
        assert!(glob_match("ch[0-9][!a].md", "ch1b.md"));
        assert!(!glob_match("ch[0-9][!a].md", "ch1a.md"));
        assert!(glob_match("**/x.md", "x.md"));
        assert!(glob_match("a/**/x.md", "a/b/c/x.md"));
        assert!(glob_match("./a/*.md", "a/b.md"));
        assert_eq!(glob_base("outputs/character_*.md"), "outputs");
        assert_eq!(glob_base("a/b*/c.md"), "a");
        assert_eq!(glob_base("*.md"), "");
        assert!(is_glob("a/*.md") && !is_glob("a/b.md"));
    }

    #[test]
    fn slugs_are_lowercase_words_joined_by_dashes() {
        assert_eq!(slug("Sarah Chen"), "sarah-chen");
        assert_eq!(slug("  Dr. Marcus O'Neil! "), "dr-marcus-o-neil");
        assert_eq!(slug("Анна"), "");
        assert_eq!(slug("ch_01"), "ch-01");
    }

    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(fmt_duration(Duration::from_secs(12)), "12s");
        assert_eq!(fmt_duration(Duration::from_secs(252)), "4m12s");
        assert_eq!(fmt_duration(Duration::from_secs(3780)), "1h03m");
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_behind_a_link_or_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real")).unwrap();
        fs::write(root.join("real/a.md"), "hi").unwrap();
        std::os::unix::fs::symlink("real", root.join("via")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("pw")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let rel = |p: &str| PathBuf::from(p);
        assert_eq!(read_inside(root, &rel("real/a.md"), 10).unwrap(), b"hi");
        assert!(matches!(
            read_inside(root, &rel("via/a.md"), 10),
            Err(FileRefusal::Symlink { link, target }) if link == rel("via") && target == rel("real")
        ));
        assert!(matches!(
            read_inside(root, &rel("pw"), 10),
            Err(FileRefusal::Symlink { target, .. }) if target == rel("/etc/passwd")
        ));
        assert!(matches!(
            read_inside(root, &rel("fifo"), 10),
            Err(FileRefusal::NotFile("a FIFO (named pipe)"))
        ));
        assert!(matches!(
            read_inside(root, &rel("real"), 10),
            Err(FileRefusal::NotFile(FOLDER))
        ));
        assert!(matches!(
            read_inside(root, &rel("real/a.md"), 1),
            Err(FileRefusal::TooLarge(1))
        ));
        assert!(matches!(
            read_inside(root, &rel("real/a.md/x"), 10),
            Err(FileRefusal::Missing)
        ));
        assert!(matches!(
            read_inside(root, &rel("../a"), 10),
            Err(FileRefusal::NotRelative)
        ));
    }

    #[test]
    fn inside_resolves_dots_by_the_letter() {
        let r = Path::new("/repo");
        assert_eq!(
            inside(r, Path::new("/repo/sub"), Path::new("../p/a.md")),
            Some(PathBuf::from("p/a.md"))
        );
        assert_eq!(inside(r, Path::new("/repo"), Path::new("../x.md")), None);
        assert_eq!(
            inside(r, Path::new("/repo"), Path::new("/etc/hostname")),
            None
        );
        assert_eq!(
            inside(r, Path::new("/repo"), Path::new("/repo/a.md")),
            Some(PathBuf::from("a.md"))
        );
    }
}
