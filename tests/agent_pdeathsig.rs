//! PDEATHSIG for real: an agent started by a "supervisor" process (this
//! test binary re-run as `agent_pdeathsig --supervisor <dir>`) dies with it
//! when that process is killed with SIGKILL; its grandchild, which fork
//! cleared of PDEATHSIG, is a leftover recognised by its token and swept.
//!
//! The target has `harness = false`: its `main` tells the helper process
//! from a test run, so the helper is never listed or run as a test.

mod common;
use common::{alive, wait_until};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loki::agent::{self, AgentEvent, Launch};
use loki::model::ProcessRecord;
use loki::process::{self, Spawner};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

/// The first argument that makes this binary the helper supervisor.
const SUPERVISOR_ARG: &str = "--supervisor";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SUPERVISOR_ARG) {
        let Some(dir) = args.get(1) else {
            eprintln!("usage: agent_pdeathsig --supervisor <dir>");
            std::process::exit(2);
        };
        supervisor(Path::new(dir));
        return;
    }
    common::runner::run_tests(&[(
        "pdeathsig_ends_the_agent_when_the_supervisor_dies",
        pdeathsig_ends_the_agent_when_the_supervisor_dies,
    )]);
}

/// The helper "supervisor": starts an agent (with a grandchild that ignores
/// SIGTERM) in `dir`, prints its process record as `AGENT <json>`, and runs
/// it until this process is killed.
fn supervisor(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let spawner = Spawner::start().expect("spawner");
        let l = Launch {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                r#"(trap '' TERM; exec sleep 1000) & echo $! > grandchild.tmp && mv grandchild.tmp grandchild; exec sleep 1000"#.into(),
            ],
            cwd: dir.to_path_buf(),
            env: vec![("LOKI_X".into(), "from-loki".into())],
            transcript: dir.join("logs/s/attempt-1.jsonl"),
            stderr_log: dir.join("logs/s/attempt-1.stderr.log"),
            claude: false,
            timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
            kill_grace: Duration::from_millis(300),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop_rx) = watch::channel(None);
        let run = agent::run(&spawner, l, tx, stop_rx);
        tokio::pin!(run);
        loop {
            tokio::select! {
                _ = &mut run => panic!("the agent ended"),
                Some(e) = rx.recv() => {
                    if let AgentEvent::Started(r) = e {
                        println!("AGENT {}", serde_json::to_string(&r).expect("record json"));
                    }
                }
            }
        }
    });
}

fn pdeathsig_ends_the_agent_when_the_supervisor_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .arg(SUPERVISOR_ARG)
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let mut rec = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("AGENT ") {
            rec = Some(serde_json::from_str::<ProcessRecord>(rest.trim()).unwrap());
            break;
        }
    }
    let rec = rec.expect("the helper supervisor printed no AGENT line");
    let gc_file = dir.path().join("grandchild");
    assert!(
        wait_until(Duration::from_secs(10), || gc_file.exists()),
        "no grandchild file"
    );
    let grandchild: i32 = std::fs::read_to_string(&gc_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(rec.pid));
    assert!(alive(grandchild));

    kill(Pid::from_raw(helper.id() as i32), Signal::SIGKILL).unwrap();
    helper.wait().unwrap();

    assert!(
        wait_until(Duration::from_secs(5), || !alive(rec.pid)),
        "agent {} outlived its supervisor",
        rec.pid
    );
    // The grandchild has no PDEATHSIG (fork clears it): it is a leftover
    // that a restarted supervisor sweeps. Its leader is gone, so it is
    // recognised by the token it inherited.
    assert!(alive(grandchild));
    assert_ne!(rec.token, 0);
    assert_eq!(rec.boot, process::boot_hash());
    assert_eq!(process::leftover_members(&rec), vec![grandchild]);
    let other_boot = ProcessRecord {
        boot: rec.boot ^ 1,
        ..rec
    };
    assert!(process::leftover_members(&other_boot).is_empty());
    assert!(alive(grandchild));
    let t0 = Instant::now();
    assert_eq!(process::sweep_leftover(&rec, Duration::from_millis(300)), 1);
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "it ignores TERM"
    );
    assert!(!alive(grandchild));
    assert_eq!(process::sweep_leftover(&rec, Duration::from_millis(300)), 0);
}
