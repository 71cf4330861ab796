//! loki: a git-native worktree swarm runner.
//!
//! The file tree is the map. One pure state machine decides
//! ([`supervisor::machine`]); one door writes state ([`supervisor::door`]);
//! every outside resource has one module. Layers, each using only those
//! above it (`scripts/layers` checks it):
//!
//! | module | owns |
//! | --- | --- |
//! | [`util`], [`model`] | plain data: ids, statuses, state records, events, `.loki/` paths, branch names, trailer keys |
//! | [`prompt`], [`plan`] | template rendering; the dependency graph |
//! | [`error`] | the one error type: a kind, hints, the renderer |
//! | [`git`] | the only user of git2 |
//! | [`process`] | the only place that spawns, signals or reaps a process |
//! | [`store`] | state files, compare-and-swap, events, the supervisor lock |
//! | [`signal_files`] | the signal folder |
//! | [`config`] | `loki.toml`, in passes |
//! | [`checks`] | deterministic checks |
//! | [`agent`] | agent command lines and output (claude's stream-json) |
//! | [`ui`] | terminal views; decide nothing |
//! | [`supervisor`] | the machine, the door, the loop and its parts |
//! | [`commands`] | one file per subcommand |

pub mod util;

pub mod model;

pub mod plan;
pub mod prompt;

pub mod error;

pub mod git;

pub mod process;

pub mod store;

pub mod signal_files;

pub mod config;

pub mod checks;

pub mod agent;

pub mod ui;

pub mod supervisor;

pub mod commands;
