//! Shared helpers for the integration tests, in one place:
//!
//! - `repo`: a temporary git repo with a swarm file, `loki` run in it to its
//!   end, the swarm-file builders and git CLI assertions;
//! - `supervisor`: `loki` running in the background ([`Running`], [`Done`]);
//! - `swarm`: the end-to-end fixture ([`Swarm`]): a repo, the supervisors
//!   started in it, their state files, events and signal folders, and the
//!   agent process groups they caused;
//! - `wait`: waiting for a witness instead of sleeping;
//! - `procs`: `/proc` readings (alive, groups, leftovers);
//! - `mock`: the scripted Messages API and the real Claude Code CLI;
//! - `runner`: the runner of the `harness = false` targets;
//! - `browser`: a headless Chromium through WebDriver (the dashboard);
//! - `remote`: a bare remote served by `git daemon` and the clones of it
//!   that stand for the machines of a shared swarm.
#![allow(dead_code, unused_imports)]

mod browser;
mod mock;
mod procs;
mod remote;
mod repo;
pub mod runner;
mod supervisor;
mod swarm;
mod wait;

pub use browser::*;
pub use mock::*;
pub use procs::*;
pub use remote::*;
pub use repo::*;
pub use supervisor::*;
pub use swarm::*;
pub use wait::*;
