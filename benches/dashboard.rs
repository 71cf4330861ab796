//! From a state change to the dashboard showing it, in a real headless
//! Chromium: p50 and p99 over 100 changes.
//!
//! `loki serve` runs on a one-stream swarm (its stream waiting for
//! approval after one untimed run) with no supervisor; the bench
//! opens the page, then 100 times runs `loki signal PAUSE ch01` (or
//! `RESUME`), which writes the state through the door, and takes the time
//! from just before the command starts to the moment the page applied the
//! snapshot that holds the new version (the page stamps `Date.now()` on
//! `document.body.dataset.updated` as it renders; the bench reads it back
//! over WebDriver). The command's own run time is measured alongside (the
//! baseline: what any view must wait for), and the result is set against
//! the 500 ms a view polling once a second (`loki status --watch`) makes a
//! person wait on average.
//!
//! `cargo bench --bench dashboard` (needs `chromium` and `chromedriver`);
//! `LOKI_BENCH_CHANGES` sets the number of changes (default 100).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use fantoccini::ClientBuilder;
use hyper_util::client::legacy::connect::HttpConnector;

mod common;
use common::*;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let changes: usize = env_num("LOKI_BENCH_CHANGES", 100);
    let loki = loki_bin()?;
    let tmp = scratch_repo()?;
    let d = tmp.path();
    write_agent(d, "#!/bin/sh\necho hi > out.md\n")?;
    std::fs::write(
        d.join("loki.toml"),
        "[agent]\ncommand = \"./agent.sh\"\n\n[[streams]]\nid = \"ch01\"\nprompt = \"prompts/p.md\"\noutputs = [\"out.md\"]\napprove = true\n",
    )?;
    std::fs::write(d.join(".gitignore"), ".loki/\n")?;
    // Run once, untimed: the stream waits for approval, with state to change.
    let _ = commit_and_run(&loki, d);

    let port = free_port()?;
    let mut serve = Command::new(&loki)
        .args(["serve", "--port", &port.to_string()])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting loki serve")?;
    let out = serve.stdout.take().context("loki serve's stdout")?;
    let serve = Kill(serve);
    let mut url = String::new();
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(u) = line.strip_prefix("loki dashboard: ") {
            url = u.to_string();
            break;
        }
    }
    if url.is_empty() {
        bail!("loki serve printed no URL");
    }

    let driver_port = free_port()?;
    let driver = Kill(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (install chromium-driver)")?,
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", driver_port)).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("chromedriver did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] }),
    );
    let client = rt.block_on(
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{driver_port}")),
    )?;
    rt.block_on(client.goto(&url))?;
    let version = |c: &fantoccini::Client| -> Result<(i64, f64)> {
        let v = rt.block_on(c.execute(
            "const r = document.querySelector('#streams tr[data-id=\"ch01\"]'); \
             return [r ? Number(r.dataset.version) : -1, Number(document.body.dataset.updated || 0)];",
            Vec::new(),
        ))?;
        Ok((v[0].as_i64().unwrap_or(-1), v[1].as_f64().unwrap_or(0.0)))
    };
    let t = Instant::now();
    while version(&client)?.0 < 0 {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("the page never showed ch01");
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut latency = Vec::with_capacity(changes);
    let mut command = Vec::with_capacity(changes);
    for i in 0..changes {
        let (before, _) = version(&client)?;
        let kind = if i % 2 == 0 { "PAUSE" } else { "RESUME" };
        let t0 = now_ms();
        let st = Command::new(&loki)
            .args(["signal", kind, "ch01"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let t1 = now_ms();
        if !st.success() {
            bail!("loki signal {kind} failed");
        }
        let wait = Instant::now();
        let shown = loop {
            let (v, at) = version(&client)?;
            if v > before {
                break at;
            }
            if wait.elapsed() > Duration::from_secs(10) {
                bail!("change {i} never reached the page");
            }
        };
        latency.push(shown - t0);
        command.push(t1 - t0);
    }
    let _ = rt.block_on(client.close());
    drop(driver);
    drop(serve);

    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let (p50, p99) = (pct(&mut latency, 0.50), pct(&mut latency, 0.99));
    let c50 = pct(&mut command, 0.50);
    println!(
        "state change → the dashboard's DOM, over {changes} changes (loki signal PAUSE/RESUME):"
    );
    println!("  p50 {p50:.1} ms, p99 {p99:.1} ms");
    println!(
        "  the command alone (baseline): p50 {c50:.1} ms; the page adds p50 {:.1} ms",
        p50 - c50
    );
    println!(
        "  against a view polling once a second (mean wait 500 ms): {:.2}x at p50",
        p50 / 500.0
    );
    Ok(())
}
