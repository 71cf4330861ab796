//! loki: a git-native worktree swarm runner.
pub mod agent;
pub mod checks;
pub mod commands;
pub mod config;
pub mod error;
pub mod git;
pub mod model;
pub mod plan;
pub mod process;
pub mod prompt;
pub mod signal_files;
pub mod store;
pub mod supervisor;
pub mod ui;
pub mod util;
