//! Unit tests of the swarm file, one file per pass, and the helpers they
//! share: scratch folders with prompt templates, and git repositories made
//! with the git CLI (through `crate::process::test_support`).

mod diag;
mod fanout;
mod load;
mod parse;
mod preflight;
mod repo;
mod validators;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::process::test_support::run_ok;

const CHAPTER: &str = "# Chapter {{CHAPTER}}\n\nWrite {{OUTPUTS}} for {{ STREAM_ID }}.\n";

/// A folder with prompt templates, where `loki.toml` would live.
fn repo(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

fn std_repo() -> TempDir {
    repo(&[
        ("prompts/chapter.md", CHAPTER),
        ("prompts/plain.md", "Just do it for {{STREAM_ID}}.\n"),
    ])
}

fn parse_in(dir: &TempDir, text: &str) -> Result<SwarmFile, ConfigError> {
    parse(text, &dir.path().join("loki.toml"))
}

fn ok(text: &str) -> SwarmFile {
    let dir = std_repo();
    match parse_in(&dir, text) {
        Ok(f) => f,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(text: &str) -> ConfigError {
    let dir = std_repo();
    match parse_in(&dir, text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert!(!e.help.is_empty(), "empty help for {e}");
            e
        }
    }
}

/// (line, col, message) of the error.
fn at(text: &str) -> (usize, usize, String) {
    let e = err(text);
    (e.line, e.col, e.message)
}

fn one(extra: &str) -> String {
    format!("[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n{extra}")
}

/// Commits what is staged in `dir`, as a test identity.
fn commit(dir: &TempDir, message: &str) {
    let args = [
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        message,
    ];
    run_ok("git", &args, dir.path());
}

/// A git repo on branch `main` with `files` committed, then `loose`
/// written but not committed.
fn git_repo(files: &[(&str, &str)], loose: &[(&str, &str)]) -> TempDir {
    let dir = repo(files);
    run_ok("git", &["init", "-q", "-b", "main"], dir.path());
    run_ok("git", &["add", "-A"], dir.path());
    commit(&dir, "files");
    for (rel, text) in loose {
        let p = dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}
