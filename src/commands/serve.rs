//! `loki serve` and `loki run --serve`: the web dashboard.
//!
//! One axum server, one page (`serve/index.html`, `app.js`, `style.css`,
//! embedded in the binary: no build step, no network at run time). What it
//! shows comes from the same files the door writes (`.loki/state/*.json`
//! and `events.jsonl`), followed with inotify (notify) and pushed to every
//! page as server-sent events: the page never polls. A stream's details
//! (transcript tail, check and validation reports, diff, history) are
//! fetched when it is selected and again when its version changes.
//!
//! Decisions written down here:
//! - **Acting** goes through [`super::steer_request`], the path `loki
//!   approve` and the other commands take: a signal file when a supervisor
//!   runs, the direct compare-and-swap when none does; the page sends the
//!   stream's version as `expected_version`, so a stale page is refused
//!   instead of acting on old state.
//! - **The token.** `loki serve` makes a random token and prints the URL
//!   with it in the fragment (`#token=…`, which browsers never send to a
//!   server or put in a Referer). The page keeps it in `sessionStorage` and
//!   sends it in the `x-loki-token` header, never in a cookie, so another
//!   site cannot forge a request (it can neither read the token nor set
//!   the header without a CORS preflight, which is never granted). On
//!   loopback, every request that changes something needs it; bound to
//!   another address, every `/api` request does (the page's own files hold
//!   no data), and loki warns.
//! - **DNS rebinding.** On loopback the `Host` header must name a loopback
//!   address or `localhost`.
//! - **Untrusted text.** Everything an agent wrote reaches the page as
//!   JSON strings and is put into the DOM as text (`textContent`), never
//!   as markup; the page's Content-Security-Policy allows no inline script.
//!   The swarm file's `env` tables stay out, and secret values (see
//!   [`redact`]) are replaced wherever they would show.
//! - **Liveness.** Whether a supervisor runs is read from its lock; while
//!   one is recorded, the server checks every 2 s that it still lives (a
//!   process leaves no file event when it ends), so a page says "no
//!   supervisor running: the last recorded state" soon after it stops.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use crate::error::Error;
use crate::model::{Kind, Layout};

const INDEX: &str = include_str!("serve/index.html");
const APP_JS: &str = include_str!("serve/app.js");
const STYLE: &str = include_str!("serve/style.css");

/// The port `loki serve` and `loki run --serve` use by default.
pub const DEFAULT_PORT: u16 = 7411;
/// Events of `events.jsonl` a page shows.
const FEED: usize = 60;
/// Transcript lines of a stream's details.
const TRANSCRIPT_LINES: usize = 200;
/// The most of a diff a page gets.
const MAX_DIFF: usize = 256 * 1024;
/// How the page's header names the token.
const TOKEN_HEADER: &str = "x-loki-token";

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub cwd: PathBuf,
    pub bind: IpAddr,
    pub port: u16,
}

struct App {
    config: Option<PathBuf>,
    cwd: PathBuf,
    root: PathBuf,
    token: String,
    loopback: bool,
    /// The latest snapshot (JSON text), sent to a page when it connects.
    latest: watch::Receiver<String>,
    /// Each new snapshot, for the pages connected.
    updates: broadcast::Sender<String>,
    /// Set when the server stops: the event streams end, so the graceful
    /// shutdown does not wait for pages that stay connected.
    closing: watch::Receiver<bool>,
}

/// Serves until `stop` fires (or forever); prints the URL first.
pub async fn serve(opts: ServeOptions, stop: Option<watch::Receiver<bool>>) -> Result<i32> {
    let root = super::repo_root(&opts.cwd)?;
    let addr = SocketAddr::new(opts.bind, opts.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::environment(format!("cannot listen on {addr}: {e}")).hint(format!(
            "another program (or another `loki serve`) may use port {}: pick another with \
             --port, or stop it (`loki doctor` checks the port)",
            opts.port
        ))
    })?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let loopback = opts.bind.is_loopback();
    let token = new_token()?;
    let first = snapshot_json(&opts.config, &opts.cwd, &root).await;
    let (latest_tx, latest) = watch::channel(first);
    let (updates, _) = broadcast::channel(64);
    let (closing_tx, closing) = watch::channel(false);
    let app = Arc::new(App {
        config: opts.config.clone(),
        cwd: opts.cwd.clone(),
        root: root.clone(),
        token: token.clone(),
        loopback,
        latest,
        updates: updates.clone(),
        closing,
    });
    let host = if loopback {
        bound.to_string()
    } else {
        eprintln!(
            "warning: serving on {bound}, not a loopback address: anyone who can reach it and \
             has the token can read the swarm and act on it (every request needs the token)"
        );
        bound.to_string()
    };
    println!("loki dashboard: http://{host}/#token={token}");
    println!("  (the token is needed to act; keep the URL to yourself)");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    tokio::spawn(follow_state(app.clone(), latest_tx));
    let shut = app.clone();
    let router = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style))
        .route("/api/state", get(api_state))
        .route("/api/events", get(api_events))
        .route("/api/streams/{id}", get(api_stream))
        .route("/api/streams/{id}/{action}", post(api_act))
        .route("/api/swarm/{action}", post(api_swarm))
        .with_state(app);
    let shutdown = async move {
        match stop {
            Some(mut s) => {
                while !*s.borrow() {
                    if s.changed().await.is_err() {
                        break;
                    }
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        // The run's last changes reach the pages before they are let go.
        let last = snapshot_json(&shut.config, &shut.cwd, &shut.root).await;
        let _ = shut.updates.send(last);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = closing_tx.send(true);
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the dashboard")?;
    Ok(0)
}

/// 32 hex digits from the kernel's random source.
fn new_token() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the dashboard's token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Follows `.loki/state/` and sends a snapshot whenever it changes.
async fn follow_state(app: Arc<App>, latest: watch::Sender<String>) {
    use notify::{RecursiveMode, Watcher};
    let dir = Layout::new(&app.root).state_dir();
    let _ = std::fs::create_dir_all(&dir);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "warning: the dashboard cannot follow {}: {e}",
                dir.display()
            );
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        eprintln!(
            "warning: the dashboard cannot follow {}: {e}",
            dir.display()
        );
        return;
    }
    let mut last = latest.borrow().clone();
    let mut cost = Duration::ZERO;
    loop {
        let supervised = last.contains("\"supervisor\":{");
        let tick = async {
            if supervised {
                tokio::time::sleep(Duration::from_secs(2)).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                // A burst of writes (a transition and its event) is one
                // update; and the server spends at most a fifth of its time
                // on snapshots, however large the swarm (each reads every
                // state file): the pause grows with the last one's cost.
                let pause = Duration::from_millis(5).max(cost * 4);
                tokio::time::sleep(pause).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick => {}
        }
        let began = std::time::Instant::now();
        let next = snapshot_json(&app.config, &app.cwd, &app.root).await;
        cost = began.elapsed();
        if next != last {
            last = next.clone();
            let _ = latest.send(next.clone());
            let _ = app.updates.send(next);
        }
    }
}

/// The swarm as the page draws it, as JSON text.
async fn snapshot_json(config: &Option<PathBuf>, cwd: &Path, root: &Path) -> String {
    let (config, cwd, root) = (config.clone(), cwd.to_path_buf(), root.to_path_buf());
    tokio::task::spawn_blocking(move || match snapshot(config, &cwd, &root) {
        Ok(v) => v,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }).to_string(),
    })
    .await
    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// The snapshot as JSON text, secrets redacted ([`redact`]).
fn snapshot(config: Option<PathBuf>, cwd: &Path, root: &Path) -> Result<String> {
    let data = super::status_data(config, cwd)?;
    let cfg = data.cfg.as_ref();
    let target = cfg
        .and_then(|c| c.swarm.target.clone())
        .or_else(|| crate::git::current_branch(root).ok().flatten())
        .unwrap_or_else(|| "main".into());
    let mut words_total = 0u64;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let streams: Vec<serde_json::Value> = data
        .rows
        .iter()
        .zip(data.words.iter())
        .map(|(st, w)| {
            words_total += w.unwrap_or(0);
            let shown = super::shown_status(st, data.supervisor.is_some());
            *counts.entry(shown).or_default() += 1;
            let scfg = cfg.and_then(|c| c.stream(&st.id));
            serde_json::json!({
                "id": st.id,
                "status": shown,
                "attempt": st.attempt,
                "attempts": st.attempts.len(),
                "version": st.version,
                "cost_usd": st.cost_usd,
                "words": w,
                "duration_secs": super::duration_secs(st),
                "reason": st.reason,
                "last_message": st.last_message,
                "paused": st.paused,
                "approved_by": st.approved_by,
                "validation": st.attempts.iter().rev().find_map(|a| a.validation.clone()),
                "depends_on": data.deps.get(st.id.as_str()).cloned().unwrap_or_default(),
                "template": scfg.and_then(|s| s.template.clone()),
                "approve": scfg.is_some_and(|s| s.checks.approve),
            })
        })
        .collect();
    let events = tail_events(&Layout::new(root).state_dir().join("events.jsonl"));
    let supervisor = data.supervisor.map(|pid| serde_json::json!({ "pid": pid }));
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    let v = serde_json::json!({
        "target": target,
        "supervisor": supervisor,
        "swarm": {
            "paused": data.swarm.paused,
            "pause_reason": data.swarm.pause_reason,
            "usage_limit": data.swarm.usage_limit,
            "usage_resets_at": data.swarm.usage_resets_at,
            "total_cost_usd": crate::util::total(data.rows.iter().map(|s| s.cost_usd)),
            "max_budget_usd": cfg.and_then(|c| c.swarm.max_budget_usd),
        },
        "totals": {
            "streams": data.rows.len(),
            "merged": n("merged"),
            "running": n("preparing") + n("running") + n("checking") + n("validating") + n("merging"),
            "waiting": n("awaiting_approval"),
            "failed": n("failed") + n("blocked") + n("conflicted"),
            "words": words_total,
        },
        "streams": streams,
        "templates": data.templates.iter().map(|t| serde_json::json!({
            "id": t.id, "source": t.source, "depends_on": t.deps,
        })).collect::<Vec<_>>(),
        "events": events,
    });
    Ok(redact(v.to_string(), cfg))
}

/// Names of environment variables whose values are secrets.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// `json` with every secret value replaced by `[redacted]`: the values of
/// the supervisor's environment variables and of the swarm's `env` tables
/// whose names say they are secrets (`ANTHROPIC_API_KEY`, `*_TOKEN`, …),
/// 8 characters or longer. Whatever carries one (a transcript where an
/// agent printed its key, a diff of a file holding one) shows the mark.
fn redact(mut json: String, cfg: Option<&crate::config::SwarmFile>) -> String {
    let mut secrets: Vec<String> = std::env::vars()
        .filter(|(k, _)| secret_name(k))
        .map(|(_, v)| v)
        .collect();
    if let Some(cfg) = cfg {
        let envs = cfg
            .streams
            .iter()
            .map(|s| &s.agent.env)
            .chain(cfg.templates.iter().map(|t| &t.stream.agent.env))
            .chain(cfg.validators.values().map(|v| &v.agent.env));
        for env in envs {
            secrets.extend(
                env.iter()
                    .filter(|(k, _)| secret_name(k))
                    .map(|(_, v)| v.clone()),
            );
        }
    }
    secrets.retain(|v| v.chars().count() >= 8);
    // Longest first, so a secret holding another is not cut in two.
    secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
    secrets.dedup();
    for v in secrets {
        // As JSON writes it inside a string.
        let quoted = serde_json::Value::String(v).to_string();
        let inner = &quoted[1..quoted.len() - 1];
        if !inner.is_empty() && json.contains(inner) {
            json = json.replace(inner, "[redacted]");
        }
    }
    json
}

/// The last [`FEED`] events of `events.jsonl` (read from its last 64 KiB).
fn tail_events(path: &Path) -> Vec<serde_json::Value> {
    let text = tail_text(path, 64 * 1024);
    let mut out: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    let skip = out.len().saturating_sub(FEED);
    out.drain(..skip);
    out
}

/// The last `max` bytes of the file at `path` (whole lines), never through
/// a link.
fn tail_text(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Some((dir, name)) = path.parent().zip(path.file_name()) else {
        return String::new();
    };
    if crate::util::check_inside(dir, Path::new(name)).is_err() {
        return String::new();
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // The first line is cut.
        text.split_once('\n')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default()
    } else {
        text
    }
}

// ----- requests ----------------------------------------------------------

fn page(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = host_ok(&app, &headers) {
        return r.into_response();
    }
    page(INDEX, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    page(APP_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}

/// A request turned away before anything is read or changed.
struct Denied {
    code: StatusCode,
    message: &'static str,
    hint: &'static str,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        refuse(self.code, self.message, self.hint)
    }
}

fn refuse(code: StatusCode, message: &str, hint: &str) -> Response {
    (
        code,
        Json(serde_json::json!({ "error": message, "hint": hint })),
    )
        .into_response()
}

/// On loopback, the `Host` a browser sends must be a loopback name: a page
/// of another site that rebinds its name to 127.0.0.1 is refused.
fn host_ok(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    if !app.loopback {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let ok = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if ok {
        Ok(())
    } else {
        Err(Denied {
            code: StatusCode::FORBIDDEN,
            message: "this dashboard answers only to a loopback address",
            hint: "open it as http://127.0.0.1:<port>/ or http://localhost:<port>/",
        })
    }
}

/// The request carries the token (compared in constant time).
fn token_ok(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let same = given.len() == app.token.len()
        && given
            .bytes()
            .zip(app.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(Denied {
            code: StatusCode::UNAUTHORIZED,
            message: "this request needs the dashboard's token",
            hint: "open the URL `loki serve` printed (it carries the token after #token=)",
        })
    }
}

/// What a read needs: the host check, and the token off loopback.
fn read_ok(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    host_ok(app, headers)?;
    if !app.loopback {
        token_ok(app, headers)?;
    }
    Ok(())
}

async fn api_state(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = read_ok(&app, &headers) {
        return r.into_response();
    }
    json_text(app.latest.borrow().clone())
}

fn json_text(text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn api_events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = read_ok(&app, &headers) {
        return r.into_response();
    }
    let first = app.latest.borrow().clone();
    let mut rx = app.updates.subscribe();
    let mut closing = app.closing.clone();
    let (tx, out) =
        tokio::sync::mpsc::channel::<std::result::Result<SseEvent, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        if tx
            .send(Ok(SseEvent::default().event("state").data(first)))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let got = tokio::select! {
                biased;
                got = rx.recv() => got,
                _ = closing.wait_for(|c| *c) => return,
            };
            let next = match got {
                Ok(s) => s,
                // A slow page missed some: the newest one says it all.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx
                .send(Ok(SseEvent::default().event("state").data(next)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn api_stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Err(r) = read_ok(&app, &headers) {
        return r.into_response();
    }
    let app2 = app.clone();
    let got = tokio::task::spawn_blocking(move || details(&app2, &id)).await;
    match got {
        Ok(Ok(v)) => json_text(v),
        Ok(Err(e)) => refuse(
            StatusCode::NOT_FOUND,
            &format!("{e:#}"),
            "pick a stream on the page",
        ),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), ""),
    }
}

/// One stream's details: its state, the transcript tail, the reports, the
/// diff and the history.
/// One stream's details as JSON text, secrets redacted.
fn details(app: &App, id: &str) -> Result<String> {
    let sid = crate::model::StreamId::parse(id)
        .map_err(|_| anyhow::anyhow!("`{}` is not a stream id", id.escape_default()))?;
    let (cfg, root, target) = super::load_config(app.config.clone(), &app.cwd)?;
    let layout = Layout::new(&root);
    let store = crate::store::StateStore::new(layout.state_dir());
    let st = store.load(sid.as_str())?;
    let scfg = cfg.stream(sid.as_str());
    if st.is_none() && scfg.is_none() {
        anyhow::bail!("no stream `{id}` in the swarm");
    }
    let n = st.as_ref().map_or(0, |s| s.attempt);
    let transcript: Vec<String> = if n > 0 {
        tail_text(&layout.transcript(sid.as_str(), n), 256 * 1024)
            .lines()
            .filter_map(super::logs::render_line)
            .collect()
    } else {
        Vec::new()
    };
    let skip = transcript.len().saturating_sub(TRANSCRIPT_LINES);
    let read_json = |name: &str| -> serde_json::Value {
        (1..=n)
            .rev()
            .find_map(|k| {
                let p = layout.run_dir(sid.as_str(), k).join(name);
                std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            })
            .unwrap_or(serde_json::Value::Null)
    };
    let branch = crate::model::paths::branch_name(sid.as_str());
    let merged = st.as_ref().and_then(|s| {
        (s.status == crate::model::Status::Merged)
            .then(|| s.merge_commit.clone().unwrap_or_default())
    });
    let preparing = st.as_ref().is_some_and(|s| {
        matches!(
            s.status,
            crate::model::Status::Pending
                | crate::model::Status::Ready
                | crate::model::Status::Preparing
        )
    });
    let diff = if let Some(commit) = merged {
        format!("merged into {target} as {commit}: `git show {commit}` shows what it changed")
    } else if preparing {
        // Its worktree is being made: a diff now would show half a checkout.
        "(the worktree is being prepared)".to_string()
    } else if crate::git::branch_exists(&root, &branch).unwrap_or(false) {
        let mut d =
            crate::git::diff_against_target(&root, sid.as_str(), &target).unwrap_or_default();
        if d.len() > MAX_DIFF {
            let mut cut = MAX_DIFF;
            while !d.is_char_boundary(cut) {
                cut -= 1;
            }
            d.truncate(cut);
            d.push_str("\n… (cut: the diff is longer)");
        }
        d
    } else {
        String::new()
    };
    let history = super::log::collect(&root, &target)
        .ok()
        .and_then(|a| a.streams.into_iter().find(|s| s.id == sid.as_str()))
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    let v = serde_json::json!({
        "id": sid,
        "state": st,
        "prompt": scfg.map(|s| s.prompt.display().to_string()),
        "outputs": scfg.map(|s| s.outputs.clone()).unwrap_or_default(),
        "validators": scfg.map(|s| s.checks.validators.clone()).unwrap_or_default(),
        "transcript": transcript[skip..].to_vec(),
        "checks": read_json("checks.json"),
        "validation": read_json(crate::supervisor::VALIDATION_FILE),
        "diff": diff,
        "history": history,
    });
    Ok(redact(v.to_string(), Some(&cfg)))
}

/// The status stream `id` shows now, as the page would show it.
async fn current_status(app: &App, id: &str) -> Option<String> {
    let root = app.root.clone();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        let dir = Layout::new(&root).state_dir();
        let st = crate::store::StateStore::new(&dir).load(&id).ok()??;
        let supervised = crate::store::SupervisorLock::holder(&dir)
            .ok()
            .flatten()
            .is_some();
        Some(super::shown_status(&st, supervised).to_string())
    })
    .await
    .ok()
    .flatten()
}

/// What an action sends.
#[derive(Debug, Default, Deserialize)]
struct ActBody {
    expected_version: Option<u64>,
    /// The status the page showed when the button was pressed.
    seen_status: Option<String>,
    note: Option<String>,
    by: Option<String>,
    #[serde(default)]
    count: bool,
}

async fn api_act(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath((id, action)): UrlPath<(String, String)>,
    body: Option<Json<ActBody>>,
) -> Response {
    let kind = match action.as_str() {
        "approve" => Kind::Approve,
        "reject" => Kind::Reject,
        "retry" => Kind::Retry,
        "cancel" => Kind::Cancel,
        "pause" => Kind::Pause,
        "resume" => Kind::Resume,
        _ => {
            return refuse(
                StatusCode::NOT_FOUND,
                "unknown action",
                "approve, reject, retry, cancel, pause or resume",
            )
        }
    };
    act(
        app,
        headers,
        Some(id),
        kind,
        body.map(|b| b.0).unwrap_or_default(),
    )
    .await
}

async fn api_swarm(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath(action): UrlPath<String>,
) -> Response {
    let kind = match action.as_str() {
        "pause" => Kind::Pause,
        "resume" => Kind::Resume,
        _ => return refuse(StatusCode::NOT_FOUND, "unknown action", "pause or resume"),
    };
    act(app, headers, None, kind, ActBody::default()).await
}

async fn act(
    app: Arc<App>,
    headers: HeaderMap,
    id: Option<String>,
    kind: Kind,
    body: ActBody,
) -> Response {
    if let Err(r) = host_ok(&app, &headers).and_then(|()| token_ok(&app, &headers)) {
        return r.into_response();
    }
    if kind == Kind::Reject && body.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a rejection needs a note",
            "say what the next attempt must change",
        );
    }
    // A page that shows another status than the stream has is stale: it
    // is told so at once (a supervisor would refuse its signal as stale
    // too, but only later, in its event log).
    if let (Some(id), Some(seen)) = (&id, &body.seen_status) {
        if let Some(now) = current_status(&app, id).await {
            if now != *seen {
                return refuse(
                    StatusCode::CONFLICT,
                    &format!(
                        "{id} is {now} now, not {seen} as your page showed it: nothing was done"
                    ),
                    "look at the stream again, then choose",
                );
            }
        }
    }
    let note = match kind {
        Kind::Approve => body.by.filter(|b| !b.trim().is_empty()),
        _ => body.note,
    };
    let app2 = app.clone();
    let done = tokio::task::spawn_blocking(move || {
        let ask = super::SteerAsk {
            kind,
            id,
            expected_version: body.expected_version,
            note,
            count: body.count,
        };
        super::steer_request(app2.config.clone(), &app2.cwd, ask)
    })
    .await;
    match done {
        Ok(Ok(message)) => Json(serde_json::json!({ "message": message })).into_response(),
        Ok(Err(e)) => {
            let text = crate::error::render(&e);
            refuse(StatusCode::CONFLICT, text.trim(), "")
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), ""),
    }
}
