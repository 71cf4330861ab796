//! The signal folder `.loki/signals/`: how agents, humans and scripts steer
//! a running swarm.
//!
//! A signal is a file `<KIND>` or `<KIND>_<stream-id>`, optionally ending in
//! `.json`, empty or holding `{"expected_version": N, "note": "..."}`.
//! Writers create it under a dot-name and rename it into place; names that
//! start with `.` are never read. The watcher (notify, non-recursive) batches
//! events briefly and follows every batch with a full scan of the folder,
//! plus a slow safety scan, so a missed event never strands a signal.
//!
//! A signal is *taken* by renaming it into `processed/` (so two consumers
//! never both apply it), then read from there without following links.
//! Malformed ones (bad name, unknown kind, symlink, body over 64 KiB,
//! invalid JSON) go to `rejected/` with a `<name>.reason` file beside them;
//! the dispatcher rejects stale or inapplicable ones the same way.
//!
//! Details:
//!
//! - Kinds match case-insensitively (`approve_ch01` works); a trailing
//!   `.json` is always stripped before the id is read. PAUSE, RESUME and
//!   STOP may stand alone (whole swarm); every other kind needs an id.
//! - A body may be empty or whitespace; otherwise it must be a JSON object
//!   with only `expected_version` (u64), `note` (string) and `count`
//!   (bool: a REJECT that counts against `max_attempts`).
//! - Files are taken oldest first (mtime, then name). A taken file lives at
//!   `processed/<name>.<unix-nanos>-<pid>` (nanos are unique within a
//!   process); a rejected one at `rejected/<same>`, with
//!   `rejected/<same>.reason` holding `signal: <name>` and `reason: <why>`.
//! - [`SignalDir::write`] never replaces a waiting signal: it renames
//!   without clobbering into `<KIND>_<id>`, or `<KIND>_<id>.json` if that
//!   is taken, so two quick writes are both applied; with both names
//!   waiting it waits up to 5 s for the supervisor to take one.
//! - The watcher waits up to 100 ms for a file that is still open for
//!   writing (created but not yet closed), so a plain `echo '{...}' >
//!   .loki/signals/APPROVE_ch01` is read whole. If inotify's limits are
//!   exhausted it falls back to polling every 500 ms and says so on stderr.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;

use crate::error::Error;
use crate::model::{Kind, StreamId};

/// Largest body accepted.
pub const MAX_BODY: u64 = 64 * 1024;

/// A signal that has been taken (it now lives in `processed/`).
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: Kind,
    pub stream: Option<StreamId>,
    pub expected_version: Option<u64>,
    pub note: Option<String>,
    /// REJECT: the rejected attempt counts against `max_attempts`
    /// (`loki reject --count`).
    pub count: bool,
    /// The name it was dropped under.
    pub name: String,
    /// Where it lives now.
    pub path: PathBuf,
}

/// What taking one file produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    Signal(Signal),
    /// Moved to `rejected/` with a reason file.
    Rejected {
        name: String,
        reason: String,
    },
}

/// `.loki/signals/` and its `processed/` and `rejected/` folders.
#[derive(Debug, Clone)]
pub struct SignalDir {
    dir: PathBuf,
}

const PROCESSED: &str = "processed";
const REJECTED: &str = "rejected";
/// Longest accepted file name, in bytes.
const MAX_NAME: usize = 200;
/// How long [`SignalDir::write`] waits when both names of a signal are taken.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// The optional body of a signal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    expected_version: Option<u64>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    count: bool,
}

impl SignalDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SignalDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes every signal waiting in the folder, oldest first.
    pub fn scan(&self) -> Vec<Taken> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(_) => return Vec::new(),
        };
        let mut waiting: Vec<(SystemTime, OsString)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if is_ignored(&name) {
                continue;
            }
            // DirEntry::metadata does not follow symlinks.
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            waiting.push((mtime, name));
        }
        if waiting.is_empty() {
            return Vec::new();
        }
        waiting.sort();
        if let Err(e) = self.ensure_folders() {
            eprintln!("loki: cannot take signals: {e:#}");
            return Vec::new();
        }
        waiting
            .into_iter()
            .filter_map(|(_, name)| self.take(&name))
            .collect()
    }

    /// Moves a taken signal to `rejected/` and writes `<name>.reason`.
    pub fn reject(&self, signal: &Signal, reason: &str) -> anyhow::Result<()> {
        self.ensure_folders()?;
        let unique = signal
            .path
            .file_name()
            .with_context(|| format!("{} is not a signal file", signal.path.display()))?;
        let dest = self.dir.join(REJECTED).join(unique);
        rename_creating_parent(&signal.path, &dest).with_context(|| {
            format!(
                "moving signal {} to {}",
                signal.path.display(),
                dest.display()
            )
        })?;
        write_reason(&dest, &signal.name, reason)
    }

    /// Writes a signal file atomically (dot-temp, rename); returns its path.
    ///
    /// A waiting signal is never replaced: the name is `<KIND>_<id>` or, if
    /// that one is still waiting, `<KIND>_<id>.json`; with both waiting it
    /// waits for the supervisor to take one.
    pub fn write(
        &self,
        kind: Kind,
        stream: Option<&str>,
        expected_version: Option<u64>,
        note: Option<&str>,
        count: bool,
    ) -> anyhow::Result<PathBuf> {
        let base = match stream {
            Some(id) if StreamId::parse(id).is_err() => bail!(
                "`{}` is not a valid stream id (lowercase letters, digits, `.`, `_` and `-`, at most 64, starting with a letter or digit, without `..` and not ending in `.` or `.lock`)",
                id.escape_debug()
            ),
            Some(id) => format!("{}_{id}", kind.as_str()),
            None if kind.allows_no_stream() => kind.as_str().to_string(),
            None => bail!("a {} signal needs a stream id", kind.as_str()),
        };
        let mut body = serde_json::Map::new();
        if let Some(v) = expected_version {
            body.insert("expected_version".into(), v.into());
        }
        if let Some(n) = note {
            body.insert("note".into(), n.into());
        }
        if count {
            body.insert("count".into(), true.into());
        }
        let bytes = if body.is_empty() {
            Vec::new()
        } else {
            let mut b = serde_json::to_vec(&body).context("serialising a signal body")?;
            b.push(b'\n');
            b
        };
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .with_context(|| format!("creating a temporary file in {}", self.dir.display()))?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        let candidates = [self.dir.join(&base), self.dir.join(format!("{base}.json"))];
        let deadline = Instant::now() + WRITE_WAIT;
        loop {
            for path in &candidates {
                match tmp.persist_noclobber(path) {
                    Ok(_) => {
                        sync_dir(&self.dir)?;
                        return Ok(path.clone());
                    }
                    Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => tmp = e.file,
                    Err(e) => {
                        return Err(anyhow::Error::new(e.error)
                            .context(format!("writing signal {}", path.display())))
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "signals {base} and {base}.json are both still waiting in {} after {}s; is a supervisor running to take them?",
                    self.dir.display(),
                    WRITE_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Files in `processed/`, oldest first: every signal ever taken and not
    /// rejected. The supervisor replays those its events do not show as
    /// handled (it died between taking and applying them).
    pub fn processed(&self) -> Vec<String> {
        // Never through a symbolic link (see `ensure_folders`).
        if !fs::symlink_metadata(self.dir.join(PROCESSED)).is_ok_and(|m| m.is_dir()) {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(self.dir.join(PROCESSED)) else {
            return Vec::new();
        };
        let mut files: Vec<(SystemTime, String)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let mtime = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((mtime, name))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, n)| n).collect()
    }

    /// Reads again a signal taken into `processed/` under `file` but never
    /// handled. Malformed ones are rejected as at first taking.
    pub fn retake(&self, file: &str) -> Option<Taken> {
        let path = self.dir.join(PROCESSED).join(file);
        // `<name>.<nanos>-<pid>`: the name it was dropped under.
        let name = file.rsplit_once('.').map_or(file, |(n, _)| n);
        self.examine_taken(OsStr::new(name), path)
    }

    /// `processed/` and `rejected/` as real folders: a symbolic link there
    /// would carry signals (and reason files) outside `.loki/signals/`.
    fn ensure_folders(&self) -> anyhow::Result<()> {
        for sub in [PROCESSED, REJECTED] {
            let path = self.dir.join(sub);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::environment(format!(
                        "{} is not a folder (a symbolic link or a file); signals are never moved through it",
                        path.display()
                    ))
                    .hint("remove it; loki recreates it")
                    .into())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("examining {}", path.display()))
                    )
                }
            }
        }
        Ok(())
    }

    /// Takes one file: rename into `processed/`, then examine it there.
    /// `None` when another consumer took it first.
    fn take(&self, name: &OsStr) -> Option<Taken> {
        let from = self.dir.join(name);
        let to = self.dir.join(PROCESSED).join(unique_name(name));
        if let Err(e) = fs::rename(&from, &to) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("loki: cannot take signal {}: {e}", from.display());
            }
            return None;
        }
        self.examine_taken(name, to)
    }

    /// Examines a file taken into `processed/` as `to`; a malformed one is
    /// moved on to `rejected/` with its reason.
    fn examine_taken(&self, name: &OsStr, to: PathBuf) -> Option<Taken> {
        let shown = name.to_string_lossy().into_owned();
        match examine(name, &to) {
            Ok(signal) => Some(Taken::Signal(signal)),
            Err(reason) => {
                let dest = self.dir.join(REJECTED).join(to.file_name().unwrap_or(name));
                if let Err(e) = rename_creating_parent(&to, &dest)
                    .with_context(|| format!("moving {} to {}", to.display(), dest.display()))
                    .and_then(|()| write_reason(&dest, &shown, &reason))
                {
                    eprintln!("loki: rejecting signal {shown}: {e:#}");
                }
                Some(Taken::Rejected {
                    name: shown,
                    reason,
                })
            }
        }
    }
}

/// Dot-names (temporaries, editors' swap files) and the two subfolders.
fn is_ignored(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.') || name == PROCESSED || name == REJECTED
}

/// Reads a taken file at `path` (never following links) and validates it.
fn examine(name: &OsStr, path: &Path) -> Result<Signal, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot examine it: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link; signals are never followed".into());
    }
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let name = name
        .to_str()
        .ok_or_else(|| "the name is not valid UTF-8".to_string())?;
    let (kind, stream) = parse_name(name)?;
    if meta.len() > MAX_BODY {
        return Err(format!(
            "its body is {} bytes; the limit is {MAX_BODY}",
            meta.len()
        ));
    }
    let bytes = read_body(path)?;
    let body = parse_body(&bytes)?;
    Ok(Signal {
        kind,
        stream,
        expected_version: body.expected_version,
        note: body.note,
        count: body.count,
        name: name.to_string(),
        path: path.to_path_buf(),
    })
}

fn read_body(path: &Path) -> Result<Vec<u8>, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot examine it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_BODY + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_BODY {
        return Err(format!("its body is over the limit of {MAX_BODY} bytes"));
    }
    Ok(bytes)
}

fn parse_body(bytes: &[u8]) -> Result<Body, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!(
            "the body must be a JSON object like {{\"expected_version\": 3, \"note\": \"...\"}}, not {}",
            json_type(&value)
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("invalid body: {e}"))
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `<name>.<unix-nanos>-<pid>`, the nanos unique within this process. Long
/// names are cut so the result (and its `.reason`) fits in NAME_MAX.
fn unique_name(name: &OsStr) -> OsString {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let nanos = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(actual) => prev = actual,
        }
    };
    let bytes = name.as_bytes();
    let mut out = bytes[..bytes.len().min(MAX_NAME)].to_vec();
    out.extend_from_slice(format!(".{nanos}-{}", std::process::id()).as_bytes());
    OsString::from_vec(out)
}

fn rename_creating_parent(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(from, to)
        }
        other => other,
    }
}

/// `<rejected file>.reason`: the name it was dropped under and why.
fn write_reason(rejected: &Path, name: &str, reason: &str) -> anyhow::Result<()> {
    let mut path = rejected.as_os_str().to_os_string();
    path.push(".reason");
    let text = format!("signal: {name}\nreason: {reason}\n");
    crate::util::write_atomic(Path::new(&path), text.as_bytes())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing folder {}", dir.display()))
}

/// Validates a signal file name: `(kind, stream id)` or a reason.
pub fn parse_name(name: &str) -> Result<(Kind, Option<StreamId>), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the name is {} bytes long; the limit is {MAX_NAME}",
            name.len()
        ));
    }
    if name.contains('/') {
        return Err("the name contains `/`".into());
    }
    if name.starts_with('.') {
        return Err("names starting with `.` are temporary files and never read".into());
    }
    let stem = name.strip_suffix(".json").unwrap_or(name);
    let mut kinds = Kind::ALL.to_vec();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.as_str().len()));
    for kind in kinds {
        let k = kind.as_str();
        let Some(head) = stem.get(..k.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(k) {
            continue;
        }
        let rest = &stem[k.len()..];
        if rest.is_empty() {
            if kind.allows_no_stream() {
                return Ok((kind, None));
            }
            return Err(format!(
                "signal `{k}` needs a stream id: name it `{k}_<stream-id>`"
            ));
        }
        let Some(id) = rest.strip_prefix('_') else {
            // `APPROVED`: not this kind.
            continue;
        };
        if id.is_empty() {
            return Err(format!(
                "the stream id after `{k}_` is missing: name it `{k}_<stream-id>`"
            ));
        }
        let Ok(id) = StreamId::parse(id) else {
            return Err(format!(
                "`{}` is not a valid stream id (lowercase letters, digits, `.`, `_` and `-`, at most 64, starting with a letter or digit, without `..` and not ending in `.` or `.lock`)",
                id.escape_debug()
            ));
        };
        return Ok((kind, Some(id)));
    }
    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    Err(format!(
        "unknown signal kind `{}`; known kinds: {}",
        guess_kind(stem).escape_debug(),
        known.join(", ")
    ))
}

/// What the writer of an unknown name meant as its kind: the leading
/// upper-case words (`FOO_BAR` of `FOO_BAR_ch01`), else up to the first `_`.
fn guess_kind(stem: &str) -> &str {
    let upper = stem
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(stem.len());
    let guess = stem[..upper].trim_end_matches('_');
    if !guess.is_empty() {
        return guess;
    }
    stem.split('_').next().unwrap_or(stem)
}

/// Batch window after the first event of a burst.
const BATCH: Duration = Duration::from_millis(2);
/// Longest wait for files still open for writing.
const SETTLE: Duration = Duration::from_millis(100);
/// Full scan even without events.
const SAFETY_SCAN: Duration = Duration::from_secs(2);
/// Interval of the polling fallback.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Watches the folder and sends every batch of taken signals to `tx` until
/// `tx` is closed. Runs on its own thread; returns a guard that stops it.
pub fn watch(
    dir: SignalDir,
    tx: tokio::sync::mpsc::UnboundedSender<Taken>,
) -> anyhow::Result<WatchGuard> {
    watch_with(dir, tx, Backend::Native)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// inotify (or the platform's equivalent), polling if its limits are hit.
    Native,
    #[cfg(test)]
    Poll,
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

fn watch_with(
    dir: SignalDir,
    tx: tokio::sync::mpsc::UnboundedSender<Taken>,
    backend: Backend,
) -> anyhow::Result<WatchGuard> {
    fs::create_dir_all(dir.dir()).with_context(|| format!("creating {}", dir.dir().display()))?;
    dir.ensure_folders()?;
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
    let watcher = make_watcher(dir.dir(), &msg_tx, backend)?;
    let thread = std::thread::Builder::new()
        .name("loki-signals".into())
        .spawn(move || watch_loop(&dir, &tx, &msg_rx, watcher))
        .context("starting the signal watcher thread")?;
    Ok(WatchGuard {
        stop: msg_tx,
        thread: Some(thread),
    })
}

fn make_watcher(
    dir: &Path,
    msg_tx: &mpsc::Sender<Msg>,
    backend: Backend,
) -> anyhow::Result<Box<dyn Watcher + Send>> {
    let handler = |tx: mpsc::Sender<Msg>| {
        move |res: notify::Result<notify::Event>| {
            let _ = tx.send(Msg::Fs(res));
        }
    };
    let poll = |why: Option<&str>| -> anyhow::Result<Box<dyn Watcher + Send>> {
        if let Some(warning) = why {
            eprintln!("{warning}");
        }
        let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
        let mut w = notify::PollWatcher::new(handler(msg_tx.clone()), config)
            .with_context(|| format!("polling {}", dir.display()))?;
        w.watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("polling {}", dir.display()))?;
        Ok(Box::new(w))
    };
    #[cfg(test)]
    if backend == Backend::Poll {
        return poll(None);
    }
    let _ = backend;
    let native =
        notify::RecommendedWatcher::new(handler(msg_tx.clone()), notify::Config::default())
            .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    match native {
        Ok(w) => Ok(Box::new(w)),
        Err(e) => match inotify_limit(&e) {
            Some((limit, value)) => poll(Some(&format!(
                "loki: warning: cannot watch {} with inotify: the limit {limit} is reached ({e}); \
                 polling it every {}ms instead. To raise it: `sudo sysctl -w {limit}={value}` \
                 (and add `{limit} = {value}` to /etc/sysctl.d/99-inotify.conf to keep it).",
                dir.display(),
                POLL_INTERVAL.as_millis()
            ))),
            None => Err(anyhow::Error::new(e).context(format!("watching {}", dir.display()))),
        },
    }
}

/// Which inotify limit an error means, and a sensible higher value.
fn inotify_limit(e: &notify::Error) -> Option<(&'static str, u32)> {
    const WATCHES: (&str, u32) = ("fs.inotify.max_user_watches", 524_288);
    const INSTANCES: (&str, u32) = ("fs.inotify.max_user_instances", 1024);
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => Some(WATCHES),
        notify::ErrorKind::Io(io) => match io.raw_os_error() {
            Some(libc::ENOSPC) => Some(WATCHES),
            Some(libc::EMFILE) => Some(INSTANCES),
            _ => None,
        },
        _ => None,
    }
}

fn watch_loop(
    dir: &SignalDir,
    tx: &tokio::sync::mpsc::UnboundedSender<Taken>,
    rx: &mpsc::Receiver<Msg>,
    watcher: Box<dyn Watcher + Send>,
) {
    // Keep the watcher alive as long as the loop runs.
    let _watcher = watcher;
    if !deliver(dir, tx) {
        return;
    }
    let mut next_safety = Instant::now() + SAFETY_SCAN;
    loop {
        let timeout = next_safety.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Fs(first)) => {
                let mut open = HashSet::new();
                let mut wanted = note_event(dir.dir(), &first, &mut open);
                let started = Instant::now();
                loop {
                    let window = if open.is_empty() { BATCH } else { SETTLE };
                    let until = started + window;
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    match rx.recv_timeout(until - now) {
                        Ok(Msg::Fs(ev)) => wanted |= note_event(dir.dir(), &ev, &mut open),
                        Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                    }
                }
                if wanted && !deliver(dir, tx) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !deliver(dir, tx) {
                    return;
                }
                next_safety = Instant::now() + SAFETY_SCAN;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Scans and sends; `false` once nobody listens.
fn deliver(dir: &SignalDir, tx: &tokio::sync::mpsc::UnboundedSender<Taken>) -> bool {
    if tx.is_closed() {
        return false;
    }
    for taken in dir.scan() {
        if tx.send(taken).is_err() {
            return false;
        }
    }
    true
}

/// Whether an event may mean a new signal, tracking files still open for
/// writing in `open`.
fn note_event(
    dir: &Path,
    event: &notify::Result<notify::Event>,
    open: &mut HashSet<PathBuf>,
) -> bool {
    let event = match event {
        Ok(event) => event,
        // Lost events, queue overflow: scan to be sure.
        Err(_) => return true,
    };
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    let paths: Vec<&PathBuf> = event
        .paths
        .iter()
        .filter(|p| p.as_path() != dir && p.file_name().is_some_and(|n| !is_ignored(n)))
        .collect();
    if paths.is_empty() {
        return false;
    }
    match event.kind {
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => {
            open.extend(paths.into_iter().cloned());
            true
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            for p in paths {
                open.remove(p);
            }
            true
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            for p in paths {
                open.remove(p);
            }
            false
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            // paths = [from, to]: the file now lives under the last one.
            for p in &paths[..paths.len().saturating_sub(1)] {
                open.remove(*p);
            }
            true
        }
        EventKind::Modify(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Access(_) => false,
    }
}

/// Stops the watcher thread when dropped.
pub struct WatchGuard {
    stop: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, SignalDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SignalDir::new(tmp.path().join("signals"));
        fs::create_dir_all(dir.dir()).unwrap();
        (tmp, dir)
    }

    fn list(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Scans once, expects exactly one rejection, and checks its reason file.
    fn expect_rejected(dir: &SignalDir, name: &str, reason_part: &str) {
        let taken = dir.scan();
        assert_eq!(taken.len(), 1, "{taken:?}");
        match &taken[0] {
            Taken::Rejected { name: n, reason } => {
                assert_eq!(n, name);
                assert!(reason.contains(reason_part), "{reason}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let rejected = dir.dir().join("rejected");
        let entries: Vec<PathBuf> = fs::read_dir(&rejected)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let reason_file = entries
            .iter()
            .find(|p| p.as_os_str().as_bytes().ends_with(b".reason"))
            .unwrap_or_else(|| panic!("no reason file for {name} in {entries:?}"));
        let text = fs::read_to_string(reason_file).unwrap();
        assert!(text.contains(&format!("signal: {name}\n")), "{text}");
        assert!(text.contains(reason_part), "{text}");
        let moved = reason_file
            .as_os_str()
            .as_bytes()
            .strip_suffix(b".reason")
            .unwrap();
        assert!(fs::symlink_metadata(OsStr::from_bytes(moved)).is_ok());
        // Nothing left waiting, nothing left in processed/.
        assert_eq!(list(dir.dir()), vec!["processed", "rejected"]);
        assert!(list(&dir.dir().join("processed")).is_empty());
    }

    #[test]
    fn names_parse() {
        let ok = |n: &str| {
            let (k, id) = parse_name(n).unwrap();
            (k, id.map(String::from))
        };
        assert_eq!(
            ok("MERGE_REQUESTED_ch01"),
            (Kind::MergeRequested, Some("ch01".into()))
        );
        assert_eq!(
            ok("TESTS_PASSED_my_feature.v2"),
            (Kind::TestsPassed, Some("my_feature.v2".into()))
        );
        assert_eq!(
            ok("TESTS_FAILED_x.json"),
            (Kind::TestsFailed, Some("x".into()))
        );
        assert_eq!(ok("approve_ch01"), (Kind::Approve, Some("ch01".into())));
        assert_eq!(ok("PAUSE"), (Kind::Pause, None));
        assert_eq!(ok("STOP.json"), (Kind::Stop, None));
        assert_eq!(ok("RESUME_ch-2"), (Kind::Resume, Some("ch-2".into())));
        for kind in Kind::ALL {
            let (k, _) = ok(&format!("{}_s1", kind.as_str()));
            assert_eq!(k, *kind);
        }

        let err = |n: &str| parse_name(n).unwrap_err();
        let e = err("FOO_ch01");
        assert!(
            e.starts_with("unknown signal kind `FOO`; known kinds: MERGE_REQUESTED, "),
            "{e}"
        );
        assert!(err("APPROVED_ch01").contains("unknown signal kind `APPROVED`"));
        assert!(err("hello").contains("unknown signal kind `hello`"));
        assert!(err("APPROVE").contains("needs a stream id"));
        assert!(err("APPROVE.json").contains("needs a stream id"));
        assert!(err("APPROVE_").contains("stream id after `APPROVE_` is missing"));
        assert!(err("APPROVE_Ch01").contains("`Ch01` is not a valid stream id"));
        assert!(err("APPROVE_a b").contains("not a valid stream id"));
        assert!(err(".APPROVE_ch01").contains("starting with `.`"));
        assert!(err("APPROVE_a/b").contains("`/`"));
        assert!(err(&format!("APPROVE_{}", "a".repeat(300))).contains("limit is 200"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn a_valid_signal_with_a_body_is_taken() {
        let (_tmp, dir) = setup();
        let path = dir
            .write(
                Kind::Approve,
                Some("ch01"),
                Some(3),
                Some("looks good"),
                false,
            )
            .unwrap();
        assert_eq!(path, dir.dir().join("APPROVE_ch01"));
        let taken = dir.scan();
        let Taken::Signal(s) = &taken[..].first().unwrap().clone() else {
            panic!("{taken:?}")
        };
        assert_eq!(taken.len(), 1);
        assert_eq!(s.kind, Kind::Approve);
        assert_eq!(s.stream.as_deref(), Some("ch01"));
        assert_eq!(s.expected_version, Some(3));
        assert_eq!(s.note.as_deref(), Some("looks good"));
        assert_eq!(s.name, "APPROVE_ch01");
        assert_eq!(s.path.parent().unwrap(), dir.dir().join("processed"));
        let file = s.path.file_name().unwrap().to_str().unwrap();
        let suffix = file.strip_prefix("APPROVE_ch01.").unwrap();
        let (nanos, pid) = suffix.split_once('-').unwrap();
        assert!(nanos.parse::<u64>().unwrap() > 0);
        assert_eq!(pid.parse::<u32>().unwrap(), std::process::id());
        assert!(s.path.exists());
        assert_eq!(list(dir.dir()), vec!["processed", "rejected"]);
        assert!(dir.scan().is_empty());
    }

    #[test]
    fn empty_and_whitespace_bodies_and_plain_files_are_fine() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("PAUSE"), "").unwrap();
        fs::write(dir.dir().join("retry_ch02.json"), "\n").unwrap();
        fs::write(
            dir.dir().join("CANCEL_ch03"),
            "{\"expected_version\": null}",
        )
        .unwrap();
        let mut got: Vec<(Kind, Option<String>, Option<u64>)> = dir
            .scan()
            .into_iter()
            .map(|t| match t {
                Taken::Signal(s) => (s.kind, s.stream.map(String::from), s.expected_version),
                other => panic!("{other:?}"),
            })
            .collect();
        got.sort_by_key(|g| g.0.as_str());
        assert_eq!(
            got,
            vec![
                (Kind::Cancel, Some("ch03".into()), None),
                (Kind::Pause, None, None),
                (Kind::Retry, Some("ch02".into()), None),
            ]
        );
    }

    #[test]
    fn oldest_first() {
        let (_tmp, dir) = setup();
        let now = SystemTime::now();
        for (name, age) in [("APPROVE_a", 1), ("APPROVE_b", 3), ("APPROVE_c", 2)] {
            let p = dir.dir().join(name);
            fs::write(&p, "").unwrap();
            let f = OpenOptions::new().write(true).open(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        let order: Vec<String> = dir
            .scan()
            .into_iter()
            .map(|t| match t {
                Taken::Signal(s) => s.name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(order, vec!["APPROVE_b", "APPROVE_c", "APPROVE_a"]);
    }

    #[test]
    fn dot_files_are_ignored() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join(".tmp-123"), "{").unwrap();
        fs::write(dir.dir().join(".APPROVE_ch01.swp"), "").unwrap();
        assert!(dir.scan().is_empty());
        assert!(dir.dir().join(".tmp-123").exists());
        assert!(dir.dir().join(".APPROVE_ch01.swp").exists());
    }

    #[test]
    fn bad_name_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("APPROVE_Bad Id"), "").unwrap();
        expect_rejected(&dir, "APPROVE_Bad Id", "not a valid stream id");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("LAUNCH_MISSILES_ch01"), "").unwrap();
        expect_rejected(
            &dir,
            "LAUNCH_MISSILES_ch01",
            "unknown signal kind `LAUNCH_MISSILES`",
        );
    }

    #[test]
    fn missing_id_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("MERGE_REQUESTED"), "").unwrap();
        expect_rejected(&dir, "MERGE_REQUESTED", "needs a stream id");
    }

    #[test]
    fn over_long_and_non_utf8_names_are_rejected() {
        let (_tmp, dir) = setup();
        let long = format!("APPROVE_{}", "a".repeat(240));
        fs::write(dir.dir().join(&long), "").unwrap();
        expect_rejected(&dir, &long, "limit is 200");
        let (_tmp, dir) = setup();
        let raw = OsString::from_vec(b"APPROVE_\xffx".to_vec());
        fs::write(dir.dir().join(&raw), "").unwrap();
        expect_rejected(&dir, &raw.to_string_lossy(), "not valid UTF-8");
    }

    #[test]
    fn a_symlink_is_rejected_and_never_followed() {
        let (tmp, dir) = setup();
        let outside = tmp.path().join("outside.json");
        fs::write(&outside, "{\"expected_version\": 1}").unwrap();
        let before = fs::metadata(&outside).unwrap();
        symlink(&outside, dir.dir().join("APPROVE_ch01")).unwrap();
        expect_rejected(&dir, "APPROVE_ch01", "symbolic link");
        // The target is untouched and the link itself was moved.
        assert_eq!(
            fs::read_to_string(&outside).unwrap(),
            "{\"expected_version\": 1}"
        );
        let after = fs::metadata(&outside).unwrap();
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
        assert_eq!(list(tmp.path()), vec!["outside.json", "signals"]);
        let rejected = dir.dir().join("rejected");
        let link = list(&rejected)
            .into_iter()
            .find(|f| !f.ends_with(".reason"))
            .unwrap();
        assert!(fs::symlink_metadata(rejected.join(link))
            .unwrap()
            .file_type()
            .is_symlink());

        // A link to a FIFO would hang anyone who opened it.
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        symlink(&fifo, dir.dir().join("REJECT_ch02")).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || done_tx.send(d.scan()).unwrap());
        let taken = done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("scan hung on a FIFO");
        assert!(
            matches!(&taken[..], [Taken::Rejected { reason, .. }] if reason.contains("symbolic link"))
        );
        // A FIFO right in the folder is not a regular file.
        nix::unistd::mkfifo(
            &dir.dir().join("RETRY_ch03"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let taken = dir.scan();
        assert!(
            matches!(&taken[..], [Taken::Rejected { reason, .. }] if reason.contains("not a regular file"))
        );
    }

    #[test]
    fn a_symlinked_processed_or_rejected_folder_is_never_used() {
        for sub in ["processed", "rejected"] {
            let (tmp, dir) = setup();
            let outside = tmp.path().join("outside");
            fs::create_dir(&outside).unwrap();
            symlink(&outside, dir.dir().join(sub)).unwrap();
            fs::write(dir.dir().join("APPROVE_ch01"), "").unwrap();
            fs::write(dir.dir().join("NOPE_ch01"), "").unwrap();
            assert!(dir.scan().is_empty(), "{sub}: nothing is taken");
            assert!(list(&outside).is_empty(), "{sub}: nothing moved outside");
            // The signals wait for the folder to be fixed.
            fs::remove_file(dir.dir().join(sub)).unwrap();
            assert_eq!(dir.scan().len(), 2, "{sub}");
            assert!(list(&outside).is_empty());
        }
    }

    #[test]
    fn a_taken_signal_is_read_again_from_processed() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("APPROVE_ch01"), "{\"note\": \"fine\"}").unwrap();
        fs::write(dir.dir().join("CANCEL_ch02"), "{").unwrap();
        let first = dir.scan();
        assert_eq!(first.len(), 2);
        let files = dir.processed();
        assert_eq!(files.len(), 1, "the malformed one went to rejected/");
        match dir.retake(&files[0]) {
            Some(Taken::Signal(s)) => {
                assert_eq!(s.kind, Kind::Approve);
                assert_eq!(s.stream.as_deref(), Some("ch01"));
                assert_eq!(s.note.as_deref(), Some("fine"));
                assert_eq!(s.name, "APPROVE_ch01");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_directory_is_rejected() {
        let (_tmp, dir) = setup();
        fs::create_dir(dir.dir().join("APPROVE_ch01")).unwrap();
        expect_rejected(&dir, "APPROVE_ch01", "not a regular file");
    }

    #[test]
    fn an_oversized_body_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(
            dir.dir().join("APPROVE_ch01"),
            vec![b' '; MAX_BODY as usize + 1],
        )
        .unwrap();
        expect_rejected(&dir, "APPROVE_ch01", "65537 bytes; the limit is 65536");
        // Exactly the limit is fine.
        fs::write(
            dir.dir().join("APPROVE_ch01"),
            vec![b' '; MAX_BODY as usize],
        )
        .unwrap();
        assert!(matches!(&dir.scan()[..], [Taken::Signal(_)]));
    }

    #[test]
    fn invalid_json_is_rejected_with_serdes_message() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("APPROVE_ch01"), "{nope").unwrap();
        expect_rejected(
            &dir,
            "APPROVE_ch01",
            "invalid JSON: key must be a string at line 1 column 2",
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(dir.dir().join("APPROVE_ch01"), "[3, \"x\"]").unwrap();
        expect_rejected(&dir, "APPROVE_ch01", "must be a JSON object");
    }

    #[test]
    fn an_unknown_field_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(
            dir.dir().join("APPROVE_ch01"),
            r#"{"expected_version": 2, "force": true}"#,
        )
        .unwrap();
        expect_rejected(&dir, "APPROVE_ch01", "unknown field `force`");
    }

    #[test]
    fn a_wrongly_typed_field_is_rejected() {
        let (_tmp, dir) = setup();
        fs::write(
            dir.dir().join("APPROVE_ch01"),
            r#"{"expected_version": -1}"#,
        )
        .unwrap();
        expect_rejected(&dir, "APPROVE_ch01", "invalid body");
    }

    #[test]
    fn the_dispatcher_rejects_a_taken_signal() {
        let (_tmp, dir) = setup();
        dir.write(Kind::Retry, Some("ch01"), Some(4), None, false)
            .unwrap();
        let Some(Taken::Signal(s)) = dir.scan().into_iter().next() else {
            panic!()
        };
        dir.reject(&s, "stale: expected version 4, the stream is at 6")
            .unwrap();
        let unique = s.path.file_name().unwrap().to_str().unwrap().to_string();
        let rejected = dir.dir().join("rejected");
        assert_eq!(
            list(&rejected),
            vec![unique.clone(), format!("{unique}.reason")]
        );
        let text = fs::read_to_string(rejected.join(format!("{unique}.reason"))).unwrap();
        assert_eq!(
            text,
            "signal: RETRY_ch01\nreason: stale: expected version 4, the stream is at 6\n"
        );
        assert!(list(&dir.dir().join("processed")).is_empty());
        assert!(dir.reject(&s, "twice").is_err());
    }

    #[test]
    fn writes_validate_and_never_clobber() {
        let (_tmp, dir) = setup();
        assert!(dir.write(Kind::Approve, None, None, None, false).is_err());
        assert!(dir
            .write(Kind::Approve, Some("../x"), None, None, false)
            .is_err());
        let p1 = dir.write(Kind::Pause, None, None, None, false).unwrap();
        assert_eq!(fs::read(&p1).unwrap(), b"");
        let a = dir
            .write(Kind::Approve, Some("ch01"), None, Some("first"), false)
            .unwrap();
        let b = dir
            .write(Kind::Approve, Some("ch01"), None, Some("second"), false)
            .unwrap();
        assert_eq!(a, dir.dir().join("APPROVE_ch01"));
        assert_eq!(b, dir.dir().join("APPROVE_ch01.json"));
        // Both names waiting: the third write waits for a consumer.
        let consumer = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                dir.scan()
            })
        };
        let c = dir
            .write(Kind::Approve, Some("ch01"), None, Some("third"), false)
            .unwrap();
        let mut notes: Vec<String> = consumer
            .join()
            .unwrap()
            .into_iter()
            .chain(dir.scan())
            .filter_map(|t| match t {
                Taken::Signal(s) if s.kind == Kind::Approve => s.note,
                _ => None,
            })
            .collect();
        notes.sort();
        assert_eq!(notes, vec!["first", "second", "third"]);
        assert!(c.starts_with(dir.dir()));
        // No temporaries left behind.
        assert_eq!(list(dir.dir()), vec!["processed", "rejected"]);
    }

    #[test]
    fn racing_consumers_never_both_take_a_signal() {
        let (_tmp, dir) = setup();
        let n = 300;
        for i in 0..n {
            fs::write(dir.dir().join(format!("TESTS_PASSED_s{i}")), "").unwrap();
        }
        let all: Vec<Taken> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let dir = dir.clone();
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for _ in 0..3 {
                            mine.extend(dir.scan());
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut names: Vec<String> = all
            .into_iter()
            .map(|t| match t {
                Taken::Signal(s) => s.name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names.len(), n);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(list(&dir.dir().join("processed")).len(), n);
        assert_eq!(list(dir.dir()), vec!["processed", "rejected"]);
    }

    async fn recv_within(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Taken>,
        limit: Duration,
    ) -> Option<Taken> {
        tokio::time::timeout(limit, rx.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn the_watcher_delivers_new_signals_quickly() {
        let tmp = tempfile::tempdir().unwrap();
        // The folder does not exist yet: watch creates it.
        let dir = SignalDir::new(tmp.path().join("signals"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let guard = watch(dir.clone(), tx).unwrap();
        assert_eq!(list(dir.dir()), vec!["processed", "rejected"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        dir.write(Kind::FeatureReady, Some("ch01"), Some(2), None, false)
            .unwrap();
        let got = recv_within(&mut rx, Duration::from_secs(1)).await;
        let elapsed = started.elapsed();
        match got {
            Some(Taken::Signal(s)) => {
                assert_eq!((s.kind, s.expected_version), (Kind::FeatureReady, Some(2)));
            }
            other => panic!("nothing within 1 s: {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

        // A plain shell-style write (create, write, close) is read whole.
        std::fs::write(dir.dir().join("APPROVE_ch02"), "{\"note\": \"shell\"}").unwrap();
        match recv_within(&mut rx, Duration::from_secs(1)).await {
            Some(Taken::Signal(s)) => assert_eq!(s.note.as_deref(), Some("shell")),
            other => panic!("{other:?}"),
        }
        // Rejections are delivered too.
        std::fs::write(dir.dir().join("NOPE_ch02"), "").unwrap();
        assert!(matches!(
            recv_within(&mut rx, Duration::from_secs(1)).await,
            Some(Taken::Rejected { .. })
        ));

        // After the guard drops, nothing is taken any more.
        drop(guard);
        std::fs::write(dir.dir().join("APPROVE_ch03"), "").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(dir.dir().join("APPROVE_ch03").exists());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_watcher_takes_what_was_waiting_at_start() {
        let (_tmp, dir) = setup();
        dir.write(Kind::Stop, None, None, Some("bedtime"), false)
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _guard = watch(dir.clone(), tx).unwrap();
        match recv_within(&mut rx, Duration::from_secs(1)).await {
            Some(Taken::Signal(s)) => {
                assert_eq!((s.kind, s.note.as_deref()), (Kind::Stop, Some("bedtime")))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_polling_fallback_delivers_too() {
        let (_tmp, dir) = setup();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _guard = watch_with(dir.clone(), tx, Backend::Poll).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        dir.write(Kind::Cancel, Some("ch09"), None, None, false)
            .unwrap();
        match recv_within(&mut rx, Duration::from_millis(1500)).await {
            Some(Taken::Signal(s)) => assert_eq!(s.stream.as_deref(), Some("ch09")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_watcher_stops_when_the_receiver_goes() {
        let (_tmp, dir) = setup();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let guard = watch(dir.clone(), tx).unwrap();
        drop(rx);
        std::thread::sleep(Duration::from_millis(20));
        dir.write(Kind::Approve, Some("ch01"), None, None, false)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Nobody listens: the signal stays where it is for the next supervisor.
        assert!(dir.dir().join("APPROVE_ch01").exists());
        drop(guard);
    }

    #[test]
    fn inotify_limits_are_recognised() {
        let e = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert_eq!(inotify_limit(&e).unwrap().0, "fs.inotify.max_user_watches");
        let e = notify::Error::io(io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(
            inotify_limit(&e).unwrap().0,
            "fs.inotify.max_user_instances"
        );
        let e = notify::Error::io(io::Error::from_raw_os_error(libc::EACCES));
        assert!(inotify_limit(&e).is_none());
    }
}
