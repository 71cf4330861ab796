//! The agent-command preflight that `loki run` asks before it starts.

use super::*;

#[test]
fn agent_commands_must_resolve_where_they_are_set() {
    let dir = repo(&[("prompts/plain.md", "x")]);
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(bin.join("agent"), "#!/bin/sh\n").unwrap();
    fs::write(bin.join("flat"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin.join("agent"), fs::Permissions::from_mode(0o755)).unwrap();
    let check = |text: &str| {
        let f = parse_in(&dir, text).unwrap();
        check_agent_commands(&f, dir.path())
    };

    check(&format!("[agent]\ncommand = \"bin/agent\"\n\n{}", one(""))).unwrap();
    let abs = bin.join("agent").display().to_string();
    check(&format!("[agent]\ncommand = \"{abs}\"\n\n{}", one(""))).unwrap();

    let e = check(&format!("[agent]\ncommand = \"bin/nope\"\n\n{}", one(""))).unwrap_err();
    assert_eq!(e.file, dir.path().join("loki.toml"));
    assert_eq!(
        (e.line, e.col, e.message.clone()),
        (
            2,
            1,
            format!(
                "stream `a`: agent command `bin/nope` does not exist ({})",
                bin.join("nope").display()
            )
        )
    );
    assert!(
        e.help
            .starts_with("put the agent there, or give its right path"),
        "{}",
        e.help
    );

    let e = check(&one("command = \"bin/flat\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (4, 1));
    assert!(
        e.message.ends_with(
            "is not executable ({})"
                .replace("{}", &bin.join("flat").display().to_string())
                .as_str()
        ),
        "{}",
        e.message
    );
    assert_eq!(
        e.help,
        format!(
            "make it executable: chmod +x {}",
            bin.join("flat").display()
        )
    );

    let e = check(&one("[streams.agent]\ncommand = \"loki-no-such-agent\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 1));
    assert_eq!(
        e.message,
        "stream `a`: agent command `loki-no-such-agent` is not an executable on PATH"
    );
    assert_eq!(
        e.help,
        "put `loki-no-such-agent` on PATH or give its path (absolute, or relative to the \
         repository root)"
    );

    // The default `claude`, looked up on the PATH the agent gets: at
    // [agent] when there is one, else at the stream.
    let e = check(&format!(
        "[agent]\nenv = {{ PATH = \"/nonexistent\" }}\n\n{}",
        one("")
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (1, 1));
    assert_eq!(
        e.message,
        "stream `a`: agent command `claude` is not an executable on the PATH set in the \
         agent's `env`"
    );
    assert!(
        e.help
            .starts_with("install Claude Code: npm install -g @anthropic-ai/claude-code"),
        "{}",
        e.help
    );
    let e = check(&format!("\n{}", one("env = { PATH = \"\" }\n"))).unwrap_err();
    assert_eq!((e.line, e.col), (2, 1));
    let path = bin.display().to_string();
    check(&one(&format!(
        "command = \"agent\"\nenv = {{ PATH = \"/nonexistent:{path}\" }}\n"
    )))
    .unwrap();
}
