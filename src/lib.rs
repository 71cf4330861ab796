//! loki: a git-native worktree swarm runner.
//!
//! The file tree is the map. One dispatcher ([`dispatch`]) owns the state of
//! every stream and is the only code that changes it; everything else is a
//! worker that it drives or that sends it events:
//!
//! | module | owns |
//! | --- | --- |
//! | [`cli`] | clap definitions; turns arguments into calls |
//! | [`config`] | `loki.toml` parsing and validation, with file:line:col errors |
//! | [`plan`] | the dependency graph: order, readiness, cycles |
//! | [`prompt`] | `{{PLACEHOLDER}}` rendering and refusal of leftovers |
//! | [`state`] | stream state files, compare-and-swap, `events.jsonl`, the supervisor lock |
//! | [`signals`] | the signal folder: watching, parsing, consuming, rejecting |
//! | [`git`] | branches, worktrees, commits, merges (git2) |
//! | [`agent`] | building the agent command, spawning, reading output, killing process groups |
//! | [`checks`] | deterministic checks of what an attempt produced |
//! | [`dispatch`] | the dispatcher loop and the merge worker |
//! | [`ui`] | progress bars and plain event lines; decides nothing |
//! | [`init`] | `loki init` and the files it installs |
//! | [`attempt`] | the blocking work before and after one attempt |
//! | [`control`] | steering commands: signal a supervisor or apply directly |
//! | [`review`], [`audit`], [`inspect`], [`clean`], [`demo`] | `show`/`check`, `log`, `logs`/`doctor`, `clean`, `demo` |
//! | [`standin`] | the rehearsal's stand-in agent |

pub mod agent;
pub mod attempt;
pub mod audit;
pub mod checks;
pub mod clean;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod dispatch;
pub mod git;
pub mod init;
pub mod inspect;
pub mod plan;
pub mod prompt;
pub mod review;
pub mod signals;
pub mod standin;
pub mod state;
pub mod ui;
pub mod util;
