//! A real headless Chromium driven through WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `.ci/run` installs), for the dashboard's
//! tests: [`Browser::start`] runs `chromedriver` on a free port and opens
//! a session; every call blocks on the browser's answer.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::*;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `chromedriver` on PATH (Debian installs it as /usr/bin/chromedriver).
pub fn require_chromedriver() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::Path::new(dir).join("chromedriver");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "chromedriver is not on PATH: install Debian's chromium and chromium-driver \
         (`bash .ci/run` does)"
    );
}

pub struct Browser {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// chromedriver and a headless Chromium session.
    pub fn start() -> Browser {
        let bin = require_chromedriver();
        let port = free_port();
        let driver = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "chromedriver did not listen on port {port}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"
            ]}),
        );
        let client = rt
            .block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a WebDriver session");
        Browser { rt, client, driver }
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client.goto(url))
            .expect("opening the page");
    }

    /// Runs `js` (a function body; `arguments` as WebDriver passes them).
    pub fn js(&self, js: &str) -> serde_json::Value {
        self.rt
            .block_on(self.client.execute(js, Vec::new()))
            .unwrap_or_else(|e| panic!("running {js}: {e}"))
    }

    /// Waits until `js` returns true, within `limit`.
    pub fn wait_js(&self, what: &str, js: &str, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            if self.js(js) == serde_json::Value::Bool(true) {
                return;
            }
            if Instant::now() > until {
                let body = self.js("return document.body.innerText;");
                panic!("never happened within {limit:?}: {what}\npage:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stream `id`'s row shows `status`.
    pub fn wait_status(&self, id: &str, status: &str, limit: Duration) {
        self.wait_js(
            &format!("{id} shown as {status}"),
            &format!(
                "const r = document.querySelector('#streams tr[data-id=\"{id}\"]'); return !!r && r.dataset.status === '{status}';"
            ),
            limit,
        );
    }

    /// Waits until the button with this `id` can be pressed.
    pub fn wait_enabled(&self, id: &str, limit: Duration) {
        self.wait_js(
            &format!("the {id} button is enabled"),
            &format!("const e = document.getElementById('{id}'); return !!e && !e.disabled;"),
            limit,
        );
    }

    /// Clicks the element `css` finds (found again if the page replaced
    /// it between finding and clicking).
    pub fn click(&self, css: &str) {
        let mut last = None;
        for _ in 0..5 {
            let got = self.rt.block_on(async {
                let e = self.client.find(Locator::Css(css)).await?;
                e.click().await
            });
            match got {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
        }
        panic!("clicking {css}: {last:?}");
    }

    pub fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let e = self.client.find(Locator::Css(css)).await?;
                e.clear().await?;
                e.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Whether a JavaScript dialog (alert, confirm) is open.
    pub fn alert_open(&self) -> bool {
        self.rt.block_on(self.client.get_alert_text()).is_ok()
    }

    pub fn screenshot(&self) -> Vec<u8> {
        self.rt
            .block_on(self.client.screenshot())
            .expect("a screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.rt.block_on(client.close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The dashboard URL (with its token) that `loki serve` or `loki run
/// --serve` printed, once it has.
pub fn dashboard_url(run: &Running) -> String {
    let mut url = None;
    wait_for(
        "the dashboard's URL",
        WAIT_LIMIT,
        || {
            url = run
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix("loki dashboard: ").map(str::to_string));
            url.is_some()
        },
        || format!("stdout:\n{}\nstderr:\n{}", run.stdout(), run.stderr()),
    );
    url.unwrap_or_default()
}

/// A raw HTTP/1.1 request to 127.0.0.1:`port`; the status code and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("writing the request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
