//! The death of the supervisor for real: an agent started by a
//! "supervisor" process (this test binary re-run as `agent_pdeathsig
//! --supervisor <dir>`) under the keeper, with children that ignore SIGTERM
//! (one of them out of the group by `setsid()`), is gone with all it
//! started within `kill_grace` (and a margin) of a SIGKILL of that process:
//! the keeper gets SIGTERM as its death signal and, as a subreaper, ends
//! every descendant.
//!
//! The target has `harness = false`: its `main` tells the helper process
//! from a test run, so the helper is never listed or run as a test.

mod common;
use common::{alive, pids_with_env, wait_env_gone, wait_until};

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
/// The agent's `kill_grace`.
const KILL_GRACE: Duration = Duration::from_millis(300);
/// What the test allows on top of `kill_grace` for the processes to go
/// (the keeper polls every 20 ms; a loaded machine is slow).
const MARGIN: Duration = Duration::from_secs(2);

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
        "nothing_of_the_agent_outlives_a_killed_supervisor",
        nothing_of_the_agent_outlives_a_killed_supervisor,
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
        process::use_keeper(env!("CARGO_BIN_EXE_loki"));
        let spawner = Spawner::start().expect("spawner");
        let l = Launch {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                r#"(trap '' TERM; exec sleep 1000) & echo $! > grandchild.tmp && mv grandchild.tmp grandchild
                   setsid sh -c 'trap "" TERM; echo $$ > escapee.tmp; mv escapee.tmp escapee; exec sleep 1000' &
                   trap '' TERM; while :; do sleep 1; done"#.into(),
            ],
            cwd: dir.to_path_buf(),
            env: vec![("LOKI_X".into(), "from-loki".into())],
            transcript: dir.join("logs/s/attempt-1.jsonl"),
            stderr_log: dir.join("logs/s/attempt-1.stderr.log"),
            claude: false,
            timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
            kill_grace: KILL_GRACE,
            sandbox: None,
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

fn read_pid(file: &Path) -> i32 {
    assert!(
        wait_until(Duration::from_secs(10), || file.exists()),
        "no {}",
        file.display()
    );
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn nothing_of_the_agent_outlives_a_killed_supervisor() {
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
    let grandchild = read_pid(&dir.path().join("grandchild"));
    let escapee = read_pid(&dir.path().join("escapee"));
    assert!(alive(rec.pid));
    assert!(alive(grandchild));
    assert!(alive(escapee));
    assert_ne!(rec.token, 0);
    assert_eq!(rec.boot, process::boot_hash());
    let token = format!("{}={:016x}", process::TOKEN_ENV, rec.token);
    let carriers = pids_with_env(&token);
    for pid in [rec.pid, grandchild, escapee] {
        assert!(carriers.contains(&pid), "{pid} does not carry the token");
    }

    kill(Pid::from_raw(helper.id() as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    helper.wait().unwrap();

    let left = wait_env_gone(&token, KILL_GRACE + MARGIN);
    let took = killed.elapsed();
    assert_eq!(
        left,
        Vec::<i32>::new(),
        "processes of the attempt outlived their supervisor by {took:?} (kill_grace {KILL_GRACE:?})"
    );
    eprintln!("every process of the attempt was gone {took:?} after the supervisor's SIGKILL");
    // They ignore SIGTERM: only the SIGKILL after kill_grace ended them.
    assert!(took >= KILL_GRACE, "{took:?}");
    // A process in the middle of its exit has already let go of its memory
    // (so its environment reads empty, and it left the list above) but is
    // not a zombie yet: wait for that last step instead of racing it.
    assert!(
        wait_until(MARGIN, || !alive(rec.pid)
            && !alive(grandchild)
            && !alive(escapee)),
        "still alive {MARGIN:?} after their environment went: {:?}",
        [rec.pid, grandchild, escapee].map(|p| (p, alive(p)))
    );
    // A restarted supervisor finds nothing left to sweep.
    assert_eq!(process::sweep_leftover(&rec, KILL_GRACE), 0);
}
