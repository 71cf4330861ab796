//! Run-time state on disk: one JSON file per stream in `.loki/state/`, the
//! swarm file `swarm.json`, the append-only `events.jsonl`, and the
//! supervisor lock.
//!
//! Every state write goes through [`StateStore::update`], a git-style
//! lock-file compare-and-swap: create `<file>.lock` with O_EXCL, compare the
//! version on disk with the expected one, write the new content into the lock
//! file, fsync, rename it over the file. The lock is held only for the swap.
//! A lock left by a dead process (its pid and start time are written in it)
//! is broken. A version mismatch is [`StoreError::Conflict`]: re-read and
//! decide again.
//!
//! # The lock file
//!
//! 1. `open(<file>.lock, O_CREAT|O_EXCL|O_WRONLY, 0644)`; `EEXIST` means
//!    someone holds it: wait (a few yields, then sleeps of 50µs..2ms with
//!    jitter) and try again.
//! 2. `flock(LOCK_EX)` on it, held until the lock file is renamed or
//!    removed. This is the kernel's record of a live holder: it vanishes
//!    when the holder dies, whatever its pid namespace.
//! 3. Write the owner line `loki-lock <pid> <start-time>` (start time =
//!    field 22 of `/proc/<pid>/stat`, so a reused pid is told apart).
//! 4. Read `<file>`, compare versions (`expected` 0 = must not exist).
//! 5. Overwrite the lock file with the new JSON (`pwrite` at 0, truncate),
//!    `fdatasync`, check the path still names our inode, `rename` it over
//!    `<file>`, fsync the folder.
//!
//! A waiter that has seen the lock for a while examines it. It is broken
//! only if it is older than 2 s, *and* nobody holds a flock on it, *and*
//! its owner line names a dead process (pid gone, zombie, or another start
//! time) or is missing (the holder died between steps 1 and 3; during
//! step 5 the holder still has the flock). Breakers serialise on a flock
//! of the folder, rename the stale lock to a unique dot-name, check it is
//! the inode they examined, and remove it. A holder whose lock was broken
//! (only possible with a badly wrong clock) notices before its rename and
//! retries with the same content if the version still matches. A writer
//! gives up with an error naming the holder after 30 s.
//!
//! Readers never lock: the rename makes them see the old or the new file.

use crate::model::{Event, StreamId, StreamState, SwarmState};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file on disk is not at the version the caller expected.
    #[error("state of {name} changed underneath: expected version {expected}, found {found}")]
    Conflict {
        name: String,
        expected: u64,
        found: u64,
    },
    /// Reading, parsing or writing failed; the message names the file.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// The `.loki/state/` folder.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    timing: LockTiming,
}

/// How long a lock may sit before its holder is examined, and how long a
/// writer waits for a live holder before giving up.
#[derive(Debug, Clone, Copy)]
struct LockTiming {
    stale_after: Duration,
    give_up_after: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming {
            stale_after: STALE_AFTER,
            give_up_after: GIVE_UP_AFTER,
        }
    }
}

/// A lock at least this old is examined; it is broken only if its holder is gone.
const STALE_AFTER: Duration = Duration::from_secs(2);
/// A live holder keeps a lock for microseconds; this long means it is stuck.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// First word of a lock file's owner line.
const LOCK_MAGIC: &str = "loki-lock";

const SWARM_FILE: &str = "swarm.json";
const EVENTS_FILE: &str = "events.jsonl";
const SUPERVISOR_LOCK: &str = "supervisor.lock";
const STEER_LOCK: &str = "steer.lock";

/// A state document with a compare-and-swap version.
trait Versioned: Serialize + DeserializeOwned {
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
}

impl Versioned for StreamState {
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl Versioned for SwarmState {
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl StateStore {
    /// `dir` is `.loki/state`; created on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore {
            dir: dir.into(),
            timing: LockTiming::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `None` when the stream has no state file yet.
    pub fn load(&self, id: &str) -> Result<Option<StreamState>, StoreError> {
        let path = self.stream_path(id)?;
        read_json(&path)
    }

    /// Removes the state of stream `id` if it is still at version
    /// `expected` (under the same lock as a compare-and-swap, so a writer
    /// that moved it on wins and this is a [`StoreError::Conflict`]). A
    /// file already gone is not an error (`false`: nothing was removed).
    pub fn remove(&self, id: &str, expected: u64) -> Result<bool, StoreError> {
        let path = self.stream_path(id)?;
        let lock = LockFile::acquire(&self.dir, &lock_path_for(&path), self.timing)?;
        let current: Option<StreamState> = read_json(&path)?;
        let Some(current) = current else {
            return Ok(false);
        };
        let found = current.version.max(1);
        if found != expected {
            return Err(StoreError::Conflict {
                name: id.to_string(),
                expected,
                found,
            });
        }
        fs::remove_file(&path)
            .with_context(|| format!("removing {}", path.display()))
            .map_err(StoreError::Io)?;
        sync_dir(&self.dir).map_err(StoreError::Io)?;
        drop(lock);
        Ok(true)
    }

    /// Every stream state file, sorted by id.
    pub fn load_all(&self) -> Result<Vec<StreamState>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("listing {}", self.dir.display()))
                    .into())
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.dir.display()))?;
            let name = entry.file_name();
            // Lock files (`.json.lock`), temporaries and graves (dot-names),
            // swarm.json and events.jsonl are not stream states.
            let Some(name) = name.to_str() else { continue };
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if name == SWARM_FILE || StreamId::parse(id).is_err() {
                continue;
            }
            ids.push(id.to_string());
        }
        ids.sort();
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            // A file removed between the listing and the read is simply gone.
            if let Some(state) = read_json::<StreamState>(&self.dir.join(format!("{id}.json")))? {
                states.push(state);
            }
        }
        Ok(states)
    }

    /// Compare-and-swap: if the file's version is `expected` (0 = the file
    /// does not exist yet), apply `change` to the current state (or to
    /// `StreamState::new(id)`), set version = expected + 1, write atomically,
    /// and return the new state.
    pub fn update(
        &self,
        id: &str,
        expected: u64,
        change: impl FnOnce(&mut StreamState),
    ) -> Result<StreamState, StoreError> {
        let path = self.stream_path(id)?;
        let sid = StreamId::parse(id).map_err(|e| StoreError::Io(anyhow!(e)))?;
        self.compare_and_swap(
            &path,
            id,
            expected,
            || StreamState::new(&sid),
            |state: &mut StreamState| {
                change(state);
                // The file name is the identity; the content must agree.
                state.id = sid.clone();
            },
        )
    }

    pub fn load_swarm(&self) -> Result<SwarmState, StoreError> {
        Ok(read_json(&self.dir.join(SWARM_FILE))?.unwrap_or_default())
    }

    /// Compare-and-swap on `swarm.json`, same rules as [`update`](Self::update).
    pub fn update_swarm(
        &self,
        expected: u64,
        change: impl FnOnce(&mut SwarmState),
    ) -> Result<SwarmState, StoreError> {
        let path = self.dir.join(SWARM_FILE);
        self.compare_and_swap(&path, "the swarm", expected, SwarmState::default, change)
    }

    /// Appends one line to `events.jsonl` (one `write` with O_APPEND, so
    /// concurrent writers never interleave within a line).
    ///
    /// If the file does not end in a newline (a write torn by a crash), the
    /// line starts with one, so the torn record never swallows this one.
    pub fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        let path = self.dir.join(EVENTS_FILE);
        let mut line = serde_json::to_vec(event).context("serialising an event")?;
        line.push(b'\n');
        let open = || {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o644)
                .open(&path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)
                    .with_context(|| format!("creating {}", self.dir.display()))?;
                open()
            }
            other => other,
        }
        .with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)
                .with_context(|| format!("reading {}", path.display()))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        let written = (&file)
            .write(&line)
            .with_context(|| format!("appending to {}", path.display()))?;
        if written != line.len() {
            return Err(anyhow!(
                "appending to {}: short write ({written} of {} bytes; is the disk full?)",
                path.display(),
                line.len()
            )
            .into());
        }
        Ok(())
    }

    /// Every event, oldest first. A line torn by a crash (a truncated JSON
    /// value, or the zero bytes a file system may leave after one) is
    /// skipped; any other unreadable line is an error naming the line.
    pub fn read_events(&self) -> Result<Vec<Event>, StoreError> {
        let path = self.dir.join(EVENTS_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reading {}", path.display()))
                    .into())
            }
        };
        let mut events = Vec::new();
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = trim_torn(line);
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Event>(line) {
                Ok(event) => events.push(event),
                Err(e) if e.is_eof() => continue,
                Err(e) => {
                    return Err(
                        anyhow!("{}:{}: not a loki event: {e}", path.display(), n + 1).into(),
                    )
                }
            }
        }
        Ok(events)
    }

    fn stream_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        // The same rule as every other door ids come in by.
        if StreamId::parse(id).is_err() {
            return Err(anyhow!(
                "`{}` is not a valid stream id (expected [a-z0-9][a-z0-9._-]{{0,63}}, without `..` and not ending in `.` or `.lock`)",
                id.escape_debug()
            )
            .into());
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// The lock-file compare-and-swap shared by streams and the swarm file.
    fn compare_and_swap<T: Versioned>(
        &self,
        path: &Path,
        name: &str,
        expected: u64,
        fresh: impl FnOnce() -> T,
        change: impl FnOnce(&mut T),
    ) -> Result<T, StoreError> {
        let lock_path = lock_path_for(path);
        let mut job = Some((fresh, change));
        let mut prepared: Option<(T, Vec<u8>)> = None;
        loop {
            let lock = LockFile::acquire(&self.dir, &lock_path, self.timing)?;
            let current: Option<T> = read_json(path)?;
            // An existing file is at least version 1 (a hand-made file that
            // says 0 would otherwise conflict with every writer forever).
            let found = current.as_ref().map_or(0, |c| c.version().max(1));
            if found != expected || (expected == 0 && current.is_some()) {
                return Err(StoreError::Conflict {
                    name: name.to_string(),
                    expected,
                    found,
                });
            }
            // The change runs once; if the lock is lost before the rename
            // (it was broken as stale), the same content is retried as long
            // as the version on disk is still the expected one.
            let (state, bytes) = match prepared.take() {
                Some(ready) => ready,
                None => {
                    let (fresh, change) = job
                        .take()
                        .ok_or_else(|| anyhow!("internal error: compare-and-swap ran twice"))?;
                    let mut state = current.unwrap_or_else(fresh);
                    change(&mut state);
                    state.set_version(expected + 1);
                    let mut bytes = serde_json::to_vec_pretty(&state)
                        .with_context(|| format!("serialising {}", path.display()))?;
                    bytes.push(b'\n');
                    (state, bytes)
                }
            };
            match lock.commit(&bytes, path, &self.dir) {
                Ok(()) => return Ok(state),
                Err(CommitError::Lost) => prepared = Some((state, bytes)),
                Err(CommitError::Io(e)) => return Err(e.into()),
            }
        }
    }
}

fn lock_path_for(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Reads and parses a JSON state file; `None` when it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into())
        }
    };
    let value = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {} (a loki state file)", path.display()))?;
    Ok(Some(value))
}

/// Strips what a torn write leaves at the end of a line: zero bytes and
/// whitespace.
fn trim_torn(mut line: &[u8]) -> &[u8] {
    while let Some((&last, rest)) = line.split_last() {
        if last == 0 || last.is_ascii_whitespace() {
            line = rest;
        } else {
            break;
        }
    }
    line
}

/// fsyncs a folder so that a rename in it survives a crash.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing folder {}", dir.display()))
}

fn age(meta: &fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::ZERO)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

enum Flock {
    Taken,
    Busy,
    /// The file system does not do flock (some network file systems).
    Unsupported,
}

fn flock(file: &impl AsRawFd, op: libc::c_int) -> io::Result<Flock> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(Flock::Taken);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(Flock::Busy),
            Some(libc::ENOLCK) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                return Ok(Flock::Unsupported)
            }
            _ => return Err(err),
        }
    }
}

/// Who created a lock file: the first line `loki-lock <pid> <start-time>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: i32,
    start_time: u64,
}

impl Owner {
    fn me() -> Owner {
        Owner {
            pid: std::process::id() as i32,
            start_time: crate::process::own_start_time(),
        }
    }

    fn line(self) -> String {
        format!("{LOCK_MAGIC} {} {}\n", self.pid, self.start_time)
    }

    fn parse(bytes: &[u8]) -> Option<Owner> {
        let line = bytes.split(|&b| b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        let mut words = line.split(' ');
        if words.next()? != LOCK_MAGIC {
            return None;
        }
        let pid = words.next()?.parse().ok()?;
        let start_time = words.next()?.parse().ok()?;
        Some(Owner { pid, start_time })
    }

    fn read(file: &File) -> Option<Owner> {
        let mut buf = [0u8; 96];
        let n = file.read_at(&mut buf, 0).ok()?;
        Owner::parse(&buf[..n])
    }

    /// Whether the process that wrote this line still runs (a reused pid
    /// has another start time).
    fn alive(self) -> bool {
        crate::process::is_alive(self.pid, self.start_time)
    }
}

enum CommitError {
    /// The lock was broken under us (judged stale); nothing was written.
    Lost,
    Io(anyhow::Error),
}

/// A held `<file>.lock`. Dropping it without committing removes it.
struct LockFile {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
    armed: bool,
}

impl LockFile {
    /// Takes the lock, waiting (spin, then jittered sleeps) while a live
    /// holder has it and breaking it when its holder is gone.
    fn acquire(dir: &Path, path: &Path, timing: LockTiming) -> Result<LockFile, StoreError> {
        let started = Instant::now();
        let check_every =
            (timing.stale_after / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let mut last_check = started;
        let mut backoff = Backoff::new();
        let mut made_dir = false;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)
            {
                Ok(file) => match LockFile::init(file, path) {
                    Ok(Some(lock)) => return Ok(lock),
                    Ok(None) => continue,
                    Err(e) => return Err(e.into()),
                },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_dir => {
                    fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    made_dir = true;
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("creating lock {}", path.display()))
                        .into())
                }
            }
            let now = Instant::now();
            if now.duration_since(last_check) >= check_every {
                last_check = now;
                if break_if_stale(dir, path, timing.stale_after)? {
                    continue;
                }
            }
            if now.duration_since(started) >= timing.give_up_after {
                return Err(anyhow!(
                    "gave up after {}s waiting for {}: {}",
                    timing.give_up_after.as_secs_f64(),
                    path.display(),
                    describe_holder(path)
                )
                .into());
            }
            backoff.wait();
        }
    }

    /// Marks a freshly created lock file as ours: flock it (the kernel's
    /// word on whether we live) and write the owner line. `None` if it was
    /// broken in the meantime.
    fn init(file: File, path: &Path) -> anyhow::Result<Option<LockFile>> {
        let meta = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        let mut lock = LockFile {
            file,
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            armed: true,
        };
        let flocked = flock(&lock.file, libc::LOCK_EX | libc::LOCK_NB)
            .with_context(|| format!("locking {}", path.display()))?;
        if let Flock::Busy = flocked {
            // A breaker is looking at it this very moment (only possible
            // with a clock far off); wait for its verdict.
            flock(&lock.file, libc::LOCK_EX)
                .with_context(|| format!("locking {}", path.display()))?;
            if !lock.still_ours() {
                lock.armed = false;
                return Ok(None);
            }
        }
        (&lock.file)
            .write_all(Owner::me().line().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(lock))
    }

    fn still_ours(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }

    /// Replaces the owner line with `bytes`, fsyncs, renames over `target`
    /// and fsyncs the folder.
    fn commit(mut self, bytes: &[u8], target: &Path, dir: &Path) -> Result<(), CommitError> {
        let io = |what: &str, e: io::Error| {
            CommitError::Io(
                anyhow::Error::new(e).context(format!("{what} {}", self.path.display())),
            )
        };
        self.file
            .write_all_at(bytes, 0)
            .map_err(|e| io("writing", e))?;
        self.file
            .set_len(bytes.len() as u64)
            .map_err(|e| io("truncating", e))?;
        self.file.sync_data().map_err(|e| io("syncing", e))?;
        if !self.still_ours() {
            self.armed = false;
            return Err(CommitError::Lost);
        }
        match fs::rename(&self.path, target) {
            Ok(()) => self.armed = false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.armed = false;
                return Err(CommitError::Lost);
            }
            Err(e) => {
                return Err(CommitError::Io(anyhow::Error::new(e).context(format!(
                    "renaming {} over {}",
                    self.path.display(),
                    target.display()
                ))))
            }
        }
        sync_dir(dir).map_err(CommitError::Io)
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if self.armed && self.still_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Examines a lock that has been there a while. Returns `true` if it is
/// gone (removed by its holder, or broken here): try again at once.
///
/// A lock is broken only when all of these hold, checked on one open file
/// descriptor while holding an exclusive flock on the folder (so breakers
/// never race each other): it is older than `stale_after`; nobody holds a
/// flock on it (its creator holds one until it is renamed or removed, and
/// the kernel drops it when the creator dies); and its owner line names a
/// process that is gone (pid dead, zombie, or its start time differs) or
/// there is no owner line. Breaking renames it to a unique dot-name first,
/// checks that the renamed file is the one examined, and removes it.
fn break_if_stale(dir: &Path, path: &Path, stale_after: Duration) -> Result<bool, StoreError> {
    let ctx = || format!("examining lock {}", path.display());
    // Cheap look first: young locks are never examined further.
    match fs::symlink_metadata(path) {
        Ok(meta) if age(&meta) < stale_after => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(anyhow::Error::new(e).context(ctx()).into()),
    }
    let dir_handle = File::open(dir).with_context(ctx)?;
    flock(&dir_handle, libc::LOCK_EX).with_context(ctx)?;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(anyhow::Error::new(e).context(ctx()).into()),
    };
    let meta = file.metadata().with_context(ctx)?;
    if !meta.is_file() || age(&meta) < stale_after {
        return Ok(false);
    }
    if let Flock::Busy = flock(&file, libc::LOCK_EX | libc::LOCK_NB).with_context(ctx)? {
        return Ok(false);
    }
    if Owner::read(&file).is_some_and(Owner::alive) {
        return Ok(false);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let grave = dir.join(format!(
        ".{file_name}.stale-{}-{}",
        std::process::id(),
        unix_nanos()
    ));
    match fs::rename(path, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(anyhow::Error::new(e).context(ctx()).into()),
    }
    let moved = fs::symlink_metadata(&grave).with_context(ctx)?;
    if (moved.dev(), moved.ino()) != (meta.dev(), meta.ino()) {
        // Not the file examined (cannot happen while breakers hold the
        // folder flock, but never destroy a live lock): put it back unless
        // a newer one took the place; its owner then sees it lost the lock.
        let _ = fs::hard_link(&grave, path);
    }
    fs::remove_file(&grave).with_context(ctx)?;
    Ok(true)
}

/// "held by pid 123 (running)" and the like, for the give-up message.
fn describe_holder(path: &Path) -> String {
    let owner = File::open(path).ok().and_then(|f| Owner::read(&f));
    match owner {
        Some(o) if o.alive() => format!(
            "it is held by pid {}, which is still running; if that process is stuck, end it",
            o.pid
        ),
        Some(o) => format!(
            "it was left by pid {}, which is gone, but it is still locked; remove the file if no loki process is running",
            o.pid
        ),
        None => "its holder is unknown; remove the file if no loki process is running".to_string(),
    }
}

/// Waiting for a lock: a few yields, then sleeps from 50µs doubling to
/// 2ms, each with ±50% jitter so waiters do not march in step.
struct Backoff {
    step: u32,
    rng: u64,
}

impl Backoff {
    fn new() -> Backoff {
        let seed = unix_nanos() as u64 ^ ((std::process::id() as u64) << 32);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        Backoff {
            step: 0,
            rng: (seed ^ addr.rotate_left(17)) | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn wait(&mut self) {
        const YIELDS: u32 = 3;
        if self.step < YIELDS {
            std::hint::spin_loop();
            std::thread::yield_now();
        } else {
            let base_us = (50u64 << (self.step - YIELDS).min(5)).min(2000);
            let jittered = base_us / 2 + self.next_random() % base_us.max(1);
            std::thread::sleep(Duration::from_micros(jittered.clamp(50, 2000)));
        }
        self.step = self.step.saturating_add(1);
    }
}

/// The lock `.loki/state/supervisor.lock`, held for the life of a
/// supervisor; the kernel frees it if the process dies. The file holds the
/// holder's pid.
///
/// It is an open-file-description record lock (`F_OFD_SETLK`), not a
/// flock, so that asking whether a supervisor runs ([`holder`](Self::holder),
/// `F_OFD_GETLK`) takes nothing: a reader (`loki status`, `show`, `log`, a
/// steering command) can never make a starting `loki run` think another
/// supervisor holds it, and a command is never taken for a supervisor.
#[derive(Debug)]
pub struct SupervisorLock {
    _file: std::fs::File,
}

impl SupervisorLock {
    /// `Ok(Err(pid))` when another live supervisor holds it (`None`: it
    /// wrote no pid).
    pub fn acquire(state_dir: &Path) -> anyhow::Result<Result<SupervisorLock, Option<i32>>> {
        Self::acquire_at(&state_dir.join(SUPERVISOR_LOCK))
    }

    /// The same lock on another file (a rehearsal's, which must be held
    /// before the rehearsal's own folder is cleared).
    pub fn acquire_at(path: &Path) -> anyhow::Result<Result<SupervisorLock, Option<i32>>> {
        let file = open_lock_file(path)?;
        match record_lock(&file, libc::F_OFD_SETLK)
            .with_context(|| format!("locking {}", path.display()))?
        {
            Flock::Busy => Ok(Err(read_pid_of_holder(&file))),
            Flock::Unsupported => Err(no_record_locks(path)),
            Flock::Taken => {
                let pid = format!("{}\n", std::process::id());
                file.set_len(0)
                    .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
                    .and_then(|()| file.sync_data())
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(Ok(SupervisorLock { _file: file }))
            }
        }
    }

    /// Pid of the supervisor holding the lock, if any. Only asks the kernel
    /// (`F_OFD_GETLK`): nothing is taken, not even for an instant.
    pub fn holder(state_dir: &Path) -> anyhow::Result<Option<i32>> {
        let path = state_dir.join(SUPERVISOR_LOCK);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("opening {}", path.display())))
            }
        };
        match record_lock(&file, libc::F_OFD_GETLK)
            .with_context(|| format!("examining {}", path.display()))?
        {
            Flock::Busy => read_pid_of_holder(&file).map(Some).ok_or_else(|| {
                anyhow!(
                    "{} is locked by a running supervisor, but it holds no pid",
                    path.display()
                )
            }),
            Flock::Taken => Ok(None),
            Flock::Unsupported => Err(no_record_locks(&path)),
        }
    }
}

/// A write lock on the whole of `file`: `F_OFD_SETLK` takes it (`Taken`,
/// or `Busy` when another open file description holds it), `F_OFD_GETLK`
/// only asks (`Taken` meaning it is free).
fn record_lock(file: &File, cmd: libc::c_int) -> io::Result<Flock> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    loop {
        // SAFETY: fcntl on a file descriptor we own, with a pointer to a
        // `flock` that lives across the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if rc == 0 {
            let free = cmd != libc::F_OFD_GETLK || fl.l_type == libc::F_UNLCK as libc::c_short;
            return Ok(if free { Flock::Taken } else { Flock::Busy });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(Flock::Busy),
            Some(libc::ENOLCK) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                return Ok(Flock::Unsupported)
            }
            _ => return Err(err),
        }
    }
}

fn no_record_locks(path: &Path) -> anyhow::Error {
    anyhow!(
        "cannot lock {}: the file system (or a kernel older than Linux 3.15) does not support open file description locks\n  help: keep .loki on a local disk",
        path.display()
    )
}

/// Opens (creating it and its folder) a file that is only ever flocked.
fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// `.loki/state/steer.lock`: serialises what changes state with no
/// supervisor running (the steering commands, `loki clean`), and a
/// supervisor that starts meanwhile with them: it takes its own lock, then
/// waits here for a command under way before it reads any state. A command
/// holding this lock asks [`SupervisorLock::holder`] whether a supervisor
/// runs, so it never mistakes another command for one.
#[derive(Debug)]
pub struct SteerLock {
    _file: File,
}

impl SteerLock {
    /// Waits for the lock (a command holds it while it applies one change).
    pub fn acquire(state_dir: &Path) -> anyhow::Result<SteerLock> {
        let path = state_dir.join(STEER_LOCK);
        let file = open_lock_file(&path)?;
        match flock(&file, libc::LOCK_EX).with_context(|| format!("locking {}", path.display()))? {
            Flock::Taken => Ok(SteerLock { _file: file }),
            Flock::Busy => Err(anyhow!("{} stayed locked", path.display())),
            Flock::Unsupported => Err(anyhow!(
                "cannot lock {}: the file system does not support flock; keep .loki on a local disk",
                path.display()
            )),
        }
    }
}

/// The pid a supervisor wrote into the lock file. A supervisor writes it
/// right after taking the lock, so an empty file is retried for a moment.
fn read_pid_of_holder(file: &File) -> Option<i32> {
    for _ in 0..50 {
        let mut buf = [0u8; 32];
        if let Ok(n) = file.read_at(&mut buf, 0) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Ok(pid) = text.trim().parse::<i32>() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn store_with(dir: &Path, stale_after_ms: u64, give_up_ms: u64) -> StateStore {
        let mut store = StateStore::new(dir);
        store.timing = LockTiming {
            stale_after: Duration::from_millis(stale_after_ms),
            give_up_after: Duration::from_millis(give_up_ms),
        };
        store
    }

    fn dead_pid() -> i32 {
        crate::process::run_quiet("true", &[]).unwrap().pid
    }

    fn make_lock(path: &Path, content: &str, age_secs: u64) {
        fs::write(path, content).unwrap();
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn versions_follow_compare_and_swap_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().join("state"));
        assert_eq!(store.load("ch01").unwrap(), None);

        let s = store
            .update("ch01", 0, |s| s.status = Status::Ready)
            .unwrap();
        assert_eq!(
            (s.version, s.status, s.id.as_str()),
            (1, Status::Ready, "ch01")
        );
        assert_eq!(s.branch, "loki/ch01");
        assert_eq!(store.load("ch01").unwrap(), Some(s.clone()));

        // 0 = must not exist.
        match store.update("ch01", 0, |_| {}) {
            Err(StoreError::Conflict {
                expected: 0,
                found: 1,
                name,
            }) => assert_eq!(name, "ch01"),
            other => panic!("{other:?}"),
        }
        match store.update("ch01", 7, |_| {}) {
            Err(StoreError::Conflict {
                expected: 7,
                found: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match store.update("ch02", 3, |_| {}) {
            Err(StoreError::Conflict {
                expected: 3,
                found: 0,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let s = store
            .update("ch01", 1, |s| {
                s.attempt = 2;
                s.id = StreamId::parse("tampered").unwrap();
                s.version = 99;
            })
            .unwrap();
        assert_eq!((s.version, s.attempt, s.id.as_str()), (2, 2, "ch01"));
        assert_eq!(store.load("ch01").unwrap().unwrap().version, 2);
        // A conflict changes nothing and leaves no lock behind.
        assert_eq!(names(store.dir()), vec!["ch01.json"]);
    }

    #[test]
    fn invalid_ids_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        for id in ["../x", "", "A", ".hidden"] {
            let err = store.update(id, 0, |_| {}).unwrap_err();
            assert!(err.to_string().contains("not a valid stream id"), "{err}");
            assert!(store.load(id).is_err());
        }
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn unreadable_state_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        fs::write(tmp.path().join("ch01.json"), "{not json").unwrap();
        let err = store.load("ch01").unwrap_err();
        assert!(matches!(err, StoreError::Io(_)));
        let msg = format!("{:#}", anyhow::Error::from(err));
        assert!(msg.contains("ch01.json"), "{msg}");
        let err = store.update("ch01", 1, |_| {}).unwrap_err();
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("ch01.json"));
        assert!(!tmp.path().join("ch01.json.lock").exists());
        assert!(store.load_all().is_err());
    }

    #[test]
    fn load_all_reads_only_stream_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        assert!(StateStore::new(tmp.path().join("missing"))
            .load_all()
            .unwrap()
            .is_empty());
        store.update("b", 0, |_| {}).unwrap();
        store.update("a", 0, |_| {}).unwrap();
        store.update_swarm(0, |s| s.paused = true).unwrap();
        store
            .append_event(&Event {
                ts: "t".into(),
                kind: "k".into(),
                stream: None,
                from: None,
                to: None,
                version: None,
                message: String::new(),
                signal_file: None,
            })
            .unwrap();
        for junk in [
            "a.json.lock",
            ".tmp-abc",
            "notes.txt",
            "Upper.json",
            ".x.json",
            "c.json~",
        ] {
            fs::write(tmp.path().join(junk), "garbage").unwrap();
        }
        SupervisorLock::acquire(tmp.path()).unwrap().unwrap();
        let ids: Vec<String> = store
            .load_all()
            .unwrap()
            .into_iter()
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
    }

    #[test]
    fn swarm_state_defaults_and_swaps() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().join("state"));
        assert_eq!(store.load_swarm().unwrap(), SwarmState::default());
        let s = store
            .update_swarm(0, |s| {
                s.paused = true;
                s.pause_reason = Some("rate limit".into());
            })
            .unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(store.load_swarm().unwrap(), s);
        assert!(matches!(
            store.update_swarm(0, |_| {}),
            Err(StoreError::Conflict { found: 1, .. })
        ));
        let s = store.update_swarm(1, |s| s.auth_paused = true).unwrap();
        assert_eq!((s.version, s.auth_paused), (2, true));
    }

    #[test]
    fn a_panicking_change_leaves_no_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        store.update("ch01", 0, |_| {}).unwrap();
        let result = std::panic::catch_unwind(|| {
            let _ = store.update("ch01", 1, |_| panic!("boom"));
        });
        assert!(result.is_err());
        assert_eq!(names(tmp.path()), vec!["ch01.json"]);
        assert_eq!(store.update("ch01", 1, |_| {}).unwrap().version, 2);
    }

    #[test]
    fn a_stale_lock_of_a_dead_process_is_broken() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        store.update("ch01", 0, |_| {}).unwrap();
        let lock = tmp.path().join("ch01.json.lock");
        let pid = dead_pid();
        make_lock(&lock, &format!("loki-lock {pid} 12345\n"), 10);
        let started = Instant::now();
        let s = store.update("ch01", 1, |s| s.attempt = 1).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(s.version, 2);
        // Neither the lock nor its grave is left.
        assert_eq!(names(tmp.path()), vec!["ch01.json"]);
    }

    #[test]
    fn a_stale_lock_without_owner_or_with_reused_pid_is_broken() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        let lock = tmp.path().join("ch01.json.lock");
        make_lock(&lock, "", 10);
        assert_eq!(store.update("ch01", 0, |_| {}).unwrap().version, 1);
        // Our own pid, but another start time: a reused pid.
        let me = Owner::me();
        make_lock(
            &lock,
            &format!("loki-lock {} {}\n", me.pid, me.start_time + 1),
            10,
        );
        assert_eq!(store.update("ch01", 1, |_| {}).unwrap().version, 2);
        // Left mid-commit (JSON already in it, no owner line, no flock).
        make_lock(&lock, "{\"id\":\"ch01\"", 10);
        assert_eq!(store.update("ch01", 2, |_| {}).unwrap().version, 3);
        assert_eq!(names(tmp.path()), vec!["ch01.json"]);
    }

    #[test]
    fn a_lock_of_a_live_process_is_respected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), 50, 400);
        store.update("ch01", 0, |_| {}).unwrap();
        let lock = tmp.path().join("ch01.json.lock");
        let line = Owner::me().line();
        make_lock(&lock, &line, 60);
        let started = Instant::now();
        let err = store.update("ch01", 1, |_| {}).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(400));
        let msg = err.to_string();
        assert!(
            msg.contains("still running") && msg.contains("ch01.json.lock"),
            "{msg}"
        );
        assert_eq!(fs::read_to_string(&lock).unwrap(), line);
        assert_eq!(store.load("ch01").unwrap().unwrap().version, 1);
    }

    #[test]
    fn a_flocked_lock_is_respected_whatever_its_owner_line_says() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), 50, 300);
        let lock = tmp.path().join("ch01.json.lock");
        make_lock(&lock, &format!("loki-lock {} 1\n", dead_pid()), 60);
        let holder = File::open(&lock).unwrap();
        assert!(matches!(
            flock(&holder, libc::LOCK_EX).unwrap(),
            Flock::Taken
        ));
        assert!(store.update("ch01", 0, |_| {}).is_err());
        assert!(lock.exists());
        drop(holder);
        assert_eq!(store.update("ch01", 0, |_| {}).unwrap().version, 1);
    }

    #[test]
    fn a_young_lock_is_waited_for_not_broken() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), 300, 5000);
        let lock = tmp.path().join("ch01.json.lock");
        make_lock(&lock, &format!("loki-lock {} 1\n", dead_pid()), 0);
        let started = Instant::now();
        assert_eq!(store.update("ch01", 0, |_| {}).unwrap().version, 1);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn a_lock_released_by_its_holder_is_taken_by_the_waiter() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        let lock = tmp.path().join("ch01.json.lock");
        make_lock(&lock, &Owner::me().line(), 0);
        let remover = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                fs::remove_file(lock).unwrap();
            })
        };
        assert_eq!(store.update("ch01", 0, |_| {}).unwrap().version, 1);
        remover.join().unwrap();
    }

    #[test]
    fn a_lost_lock_is_noticed_before_the_rename() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("x.json");
        let lock_path = lock_path_for(&target);
        let lock = LockFile::acquire(tmp.path(), &lock_path, LockTiming::default()).unwrap();
        assert!(fs::read_to_string(&lock_path)
            .unwrap()
            .starts_with("loki-lock "));
        // A breaker (with a clock far off) took it and a new holder came.
        fs::rename(&lock_path, tmp.path().join(".grave")).unwrap();
        fs::write(&lock_path, "someone else").unwrap();
        assert!(matches!(
            lock.commit(b"{}", &target, tmp.path()),
            Err(CommitError::Lost)
        ));
        assert!(!target.exists());
        assert_eq!(fs::read_to_string(&lock_path).unwrap(), "someone else");
    }

    #[test]
    fn threads_never_lose_an_update() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        loop {
                            let v = store.load("n").unwrap().map_or(0, |s| s.version);
                            match store.update("n", v, |s| s.attempt += 1) {
                                Ok(_) => break,
                                Err(StoreError::Conflict { .. }) => continue,
                                Err(e) => panic!("{e:#}"),
                            }
                        }
                    }
                });
            }
        });
        let s = store.load("n").unwrap().unwrap();
        assert_eq!((s.version, s.attempt), (100, 100));
    }

    fn event(n: u64) -> Event {
        Event {
            ts: crate::util::now_rfc3339(),
            kind: "transition".into(),
            stream: Some("ch01".into()),
            from: Some(Status::Ready),
            to: Some(Status::Running),
            version: Some(n),
            message: format!("event {n}"),
            signal_file: None,
        }
    }

    #[test]
    fn events_append_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().join("state"));
        assert!(store.read_events().unwrap().is_empty());
        for n in 0..3 {
            store.append_event(&event(n)).unwrap();
        }
        let events = store.read_events().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], event(2).clone_with_ts(&events[2].ts));
        let text = fs::read_to_string(tmp.path().join("state/events.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));
    }

    impl Event {
        fn clone_with_ts(mut self, ts: &str) -> Event {
            self.ts = ts.to_string();
            self
        }
    }

    #[test]
    fn torn_event_lines_are_skipped_and_never_swallow_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        let path = tmp.path().join("events.jsonl");
        store.append_event(&event(1)).unwrap();
        // A crash mid-write: a truncated line, no newline.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"ts":"2024-01-01T00:00:00Z","kind":"tr"#)
            .unwrap();
        assert_eq!(store.read_events().unwrap().len(), 1);
        store.append_event(&event(2)).unwrap();
        // What some file systems leave after a crash: zero bytes.
        f.write_all(&[0u8; 16]).unwrap();
        let versions: Vec<_> = store
            .read_events()
            .unwrap()
            .into_iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, vec![Some(1), Some(2)]);
        store.append_event(&event(3)).unwrap();
        assert_eq!(store.read_events().unwrap().len(), 3);
    }

    #[test]
    fn a_corrupt_event_line_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        store.append_event(&event(1)).unwrap();
        let path = tmp.path().join("events.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"hello\": 1}\n").unwrap();
        store.append_event(&event(2)).unwrap();
        let msg = store.read_events().unwrap_err().to_string();
        assert!(msg.contains("events.jsonl:2"), "{msg}");
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for n in 0..200 {
                        store.append_event(&event(n)).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.read_events().unwrap().len(), 800);
    }

    #[test]
    fn owner_lines_and_proc_stat() {
        let me = Owner::me();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.start_time > 0);
        assert_eq!(Owner::parse(me.line().as_bytes()), Some(me));
        assert!(me.alive());
        assert_eq!(Owner::parse(b"{\"id\": 1}"), None);
        assert_eq!(Owner::parse(b""), None);
        assert!(!Owner {
            pid: dead_pid(),
            start_time: 1
        }
        .alive());
        assert!(!Owner {
            pid: 0,
            start_time: 0
        }
        .alive());
    }

    #[test]
    fn supervisor_lock_is_exclusive_and_names_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert_eq!(SupervisorLock::holder(&dir).unwrap(), None);
        let lock = SupervisorLock::acquire(&dir).unwrap().unwrap();
        let me = std::process::id() as i32;
        assert_eq!(
            fs::read_to_string(dir.join("supervisor.lock")).unwrap(),
            format!("{me}\n")
        );
        assert_eq!(SupervisorLock::holder(&dir).unwrap(), Some(me));
        match SupervisorLock::acquire(&dir).unwrap() {
            Err(Some(pid)) => assert_eq!(pid, me),
            other => panic!("{other:?}"),
        }
        // Asking did not take it.
        assert_eq!(SupervisorLock::holder(&dir).unwrap(), Some(me));
        drop(lock);
        assert_eq!(SupervisorLock::holder(&dir).unwrap(), None);
        // A leftover pid of a dead supervisor does not count.
        fs::write(dir.join("supervisor.lock"), "999999\n").unwrap();
        assert_eq!(SupervisorLock::holder(&dir).unwrap(), None);
        let again = SupervisorLock::acquire(&dir).unwrap();
        assert!(again.is_ok());
    }
}
