//! The web dashboard in a real headless Chromium (WebDriver): a running
//! swarm seen live without reloading, an approval and a rejection made by
//! clicking, requests without the token refused, agent text rendered inert,
//! and a screenshot of the demo swarm's dashboard for a reviewer.

mod common;
use common::*;

use std::time::Duration;

const LIVE: Duration = Duration::from_secs(30);

/// `loki run --plain --wait --serve=PORT` in `s`; the run and the URL.
fn run_serving(s: &Swarm) -> (Running, String, u16) {
    let port = free_port();
    let run = s.spawn(&["run", "--plain", "--wait", &format!("--serve={port}")]);
    let url = dashboard_url(&run);
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/#token=")),
        "{url}"
    );
    (run, url, port)
}

#[test]
fn the_dashboard_follows_a_run_live_and_a_click_approves_a_stream() {
    let s = Swarm::empty();
    let mut toml = header(2, "");
    toml.push_str(&stream_with("ch01", &[], &[("FAKE_AGENT_SLOW", "2")], ""));
    toml.push_str(&stream_with("ch02", &["ch01"], &[], "approve = true\n"));
    s.write(&toml);
    let (run, url, _) = run_serving(&s);
    let b = Browser::start();
    b.goto(&url);
    // The page learns of each change as it happens: no reload between.
    b.js("window.__loaded = performance.timeOrigin; return true;");
    b.wait_status("ch01", "running", LIVE);
    b.wait_status("ch01", "merged", LIVE);
    b.wait_status("ch02", "awaiting_approval", LIVE);
    assert_eq!(
        b.js("return window.__loaded === performance.timeOrigin;"),
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );
    // The graph draws both, coloured by status.
    b.wait_js(
        "ch01's node is merged in the graph",
        "const n = document.querySelector('#graph .node[data-id=\"ch01\"]'); return !!n && n.dataset.status === 'merged';",
        LIVE,
    );
    b.click("#streams tr[data-id=\"ch02\"]");
    b.wait_enabled("approve", LIVE);
    b.type_into("#approver", "maria");
    b.click("#approve");
    b.wait_status("ch02", "merged", LIVE);
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["ch01", "ch02"]);
    assert_eq!(s.state("ch02")["approved_by"], "maria");
    // The approval went through the supervisor, as `loki approve` does.
    assert!(s.has_event("signal", "", "APPROVE"), "{}", s.events_text());
}

#[test]
fn a_rejection_with_a_note_made_on_the_page_reaches_the_next_attempts_prompt() {
    let s = Swarm::empty();
    let mut toml = header(1, "");
    toml.push_str(&stream_with("ch01", &[], &[], "approve = true\n"));
    s.write(&toml);
    let (run, url, _) = run_serving(&s);
    let b = Browser::start();
    b.goto(&url);
    b.wait_status("ch01", "awaiting_approval", LIVE);
    b.click("#streams tr[data-id=\"ch01\"]");
    b.wait_enabled("reject", LIVE);
    b.type_into("#note", "Mira must not reach the harbour before chapter 3");
    b.click("#reject");
    s.wait_for("attempt 2's prompt", || {
        std::fs::read_to_string(s.path().join(".loki/runs/ch01/attempt-2/prompt.md"))
            .is_ok_and(|p| p.contains("Mira must not reach the harbour before chapter 3"))
    });
    // The second draft waits again; approve it so the run ends.
    b.wait_js(
        "attempt 2 awaits approval",
        "const r = document.querySelector('#streams tr[data-id=\"ch01\"]'); return !!r && r.dataset.status === 'awaiting_approval' && r.children[2].textContent === '2';",
        LIVE,
    );
    b.wait_enabled("approve", LIVE);
    b.click("#approve");
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let st = s.state("ch01");
    assert_eq!(st["attempts"][0]["outcome"], "rejected", "{st:#}");
    assert_eq!(st["status"], "merged", "{st:#}");
}

#[test]
fn requests_without_the_token_are_refused_and_agent_text_renders_inert() {
    let s = Swarm::empty();
    // The agent prints markup that would run if it were ever parsed as HTML.
    let payload =
        "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2; alert(1)\">";
    // It also prints its key, which no page may show.
    let agent = s.agent_script(
        "hostile.sh",
        &format!("echo '{payload}'\necho \"my key is $LOKI_TEST_SECRET\""),
        "",
    );
    let mut toml = header_with(&agent, 1, 3);
    let secret = "sk-do-not-leak-4242";
    toml.push_str(&stream_with(
        "ch01",
        &[],
        &[("LOKI_TEST_SECRET", secret)],
        "approve = true\n",
    ));
    s.write(&toml);
    let (run, url, port) = run_serving(&s);

    // Changing anything needs the token, in its header.
    let path = "/api/streams/ch01/cancel";
    let json = [("Content-Type", "application/json")];
    let (code, body) = http(port, "POST", path, &json, "{}");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("needs the dashboard's token"), "{body}");
    let wrong = [
        ("Content-Type", "application/json"),
        ("x-loki-token", "0123"),
    ];
    assert_eq!(http(port, "POST", path, &wrong, "{}").0, 401);
    // A page of another site rebinding its name to 127.0.0.1 is refused.
    let rebound = [("Host", "evil.example:80")];
    assert_eq!(http(port, "GET", "/api/state", &rebound, "").0, 403);
    // Reading on loopback needs no token; no environment value is sent.
    let (code, state) = http(port, "GET", "/api/state", &[], "");
    assert_eq!(code, 200, "{state}");
    assert!(
        state.contains("\"ch01\"") && !state.contains(secret),
        "{state}"
    );

    let b = Browser::start();
    b.goto(&url);
    b.wait_status("ch01", "awaiting_approval", LIVE);
    b.click("#streams tr[data-id=\"ch01\"]");
    b.wait_js(
        "the transcript shows the payload as text",
        "return document.getElementById('transcript').textContent.includes('<script>window.__xss = 1</script>');",
        LIVE,
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#transcript *, #streams td.latest *').length;"),
        serde_json::json!(0),
        "agent text became elements"
    );
    assert_eq!(
        b.js("return typeof window.__xss;"),
        serde_json::json!("undefined")
    );
    // The key the agent printed reaches no page.
    let (code, details) = http(port, "GET", "/api/streams/ch01", &[], "");
    assert_eq!(code, 200, "{details}");
    assert!(
        details.contains("my key is [redacted]") && !details.contains(secret),
        "{details}"
    );
    b.wait_js(
        "the page shows the key redacted",
        "return document.getElementById('transcript').textContent.includes('my key is [redacted]');",
        LIVE,
    );
    assert!(!b.alert_open(), "an alert fired");
    // A page that shows an old status is refused with a message.
    let token = url.split("#token=").nth(1).unwrap_or_default().to_string();
    let with_token = [
        ("Content-Type", "application/json"),
        ("x-loki-token", token.as_str()),
    ];
    let (code, body) = http(
        port,
        "POST",
        "/api/streams/ch01/approve",
        &with_token,
        r#"{"expected_version": 1, "seen_status": "running"}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("ch01 is awaiting_approval now, not running"),
        "{body}"
    );
    // The token from the URL lets the page act: cancel ends the run.
    b.wait_enabled("cancel", LIVE);
    b.click("#cancel");
    let done = run.wait();
    // A cancelled stream is left unmerged: exit code 1.
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(s.state("ch01")["status"], "cancelled");
}

/// `loki demo` in a kept folder, then `loki serve` there: the dashboard of
/// the demo swarm, saved as `target/screenshots/dashboard-demo.png` for a
/// reviewer to look at.
#[test]
fn a_screenshot_of_the_demo_swarms_dashboard() {
    let parent = tempfile::tempdir().expect("tempdir");
    let demo = std::process::Command::new(loki_bin())
        .args(["demo", "--plain", "--dir"])
        .arg(parent.path())
        .env("PATH", fast_path())
        .env("NO_COLOR", "1")
        .output()
        .expect("loki demo");
    assert!(demo.status.success(), "{}", both(&demo));
    let text = stdout(&demo);
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("loki demo: a six-chapter book in "))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no demo folder in:\n{text}"));
    let port = free_port();
    let serve = Running::spawn(&dir, &["serve", "--port", &port.to_string()]);
    let url = dashboard_url(&serve);
    let b = Browser::start();
    b.goto(&url);
    b.wait_status("ch06", "merged", LIVE);
    b.click("#streams tr[data-id=\"ch03\"]");
    b.wait_js(
        "ch03's transcript and checks are shown",
        "return document.getElementById('checks').textContent.startsWith('PASS');",
        LIVE,
    );
    assert_eq!(
        b.js("return document.getElementById('supervisor').textContent;"),
        serde_json::json!("no supervisor running: the last recorded state")
    );
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&out).expect("mkdir target/screenshots");
    std::fs::write(out.join("dashboard-demo.png"), png).expect("writing the screenshot");
    serve.signal(nix::sys::signal::Signal::SIGINT);
    let done = serve.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
}
