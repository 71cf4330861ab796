//! Pass 1: the text alone (keys, types, ids, dependencies, cycles).

use super::*;
use crate::plan;

#[test]
fn minimal_file_gets_every_default() {
    let f = ok("[[streams]]\nid = \"ch01\"\nprompt = \"prompts/plain.md\"\n");
    assert!(f.path.is_absolute());
    assert!(f.path.ends_with("loki.toml"));
    assert_eq!(f.root, f.path.parent().unwrap());
    assert_eq!(f.swarm, SwarmSettings::default());
    let s = f.stream("ch01").unwrap();
    assert_eq!(s.agent, AgentSettings::default());
    assert_eq!(s.checks, CheckSettings::default());
    assert_eq!(s.prompt, PathBuf::from("prompts/plain.md"));
    assert!(s.vars.is_empty() && s.inputs.is_empty() && s.outputs.is_empty());
    assert!(s.depends_on.is_empty());
    assert!(s.agent.is_claude());
    assert_eq!(
        SwarmSettings::default().spawn_interval,
        Duration::from_millis(100)
    );
    assert!(f.stream("nope").is_none());
}

#[test]
fn every_section_key_is_read() {
    let f = ok(r#"
[swarm]
target = "main"
max_parallel = 2
max_budget_usd = 12
spawn_interval = "500ms"
pause_at_utilization = 0.9
max_wait = "2h"
remote = "origin"
lease = "45s"

[agent]
command = "scripts/fake-agent"
args = ["--fast", "-v"]
model = "opus"
permission_mode = "bypassPermissions"
timeout = "1h30m"
idle_timeout = 120
max_attempts = 5
env = { IS_SANDBOX = "1", FOO = "bar" }
kill_grace = "0s"
resume = false
max_budget_usd = 2.5
agent_type = "character-designer"

[checks]
words = [1500, 3000]
word_tolerance = 0.2
require = ["Anna"]
forbid = ["TODO", "lorem"]
canonical = false
command = "make lint"
command_timeout = "2m"
approve = true

[[streams]]
id = "ch01"
prompt = "prompts/plain.md"
outputs = ["ch01.md"]
"#);
    assert_eq!(
        f.swarm,
        SwarmSettings {
            target: Some("main".into()),
            max_parallel: 2,
            max_budget_usd: Some(12.0),
            spawn_interval: Duration::from_millis(500),
            pause_at_utilization: Some(0.9),
            max_wait: Duration::from_secs(7200),
            max_validators: None,
            remote: Some("origin".into()),
            lease: Duration::from_secs(45),
            target_at: Some((3, 10)),
        }
    );
    let s = &f.streams[0];
    let mut env = BTreeMap::new();
    env.insert("FOO".to_string(), "bar".to_string());
    env.insert("IS_SANDBOX".to_string(), "1".to_string());
    assert_eq!(
        s.agent,
        AgentSettings {
            command: "scripts/fake-agent".into(),
            args: vec!["--fast".into(), "-v".into()],
            model: "opus".into(),
            permission_mode: "bypassPermissions".into(),
            timeout: Duration::from_secs(5400),
            idle_timeout: Duration::from_secs(120),
            max_attempts: 5,
            env,
            kill_grace: Duration::ZERO,
            resume: false,
            max_budget_usd: Some(2.5),
            sandbox: crate::config::Sandbox::None,
            agent_type: Some("character-designer".into()),
        }
    );
    assert!(!s.agent.is_claude());
    assert_eq!(
        s.checks,
        CheckSettings {
            words: Some((1500, 3000)),
            word_tolerance: 0.2,
            require: vec!["Anna".into()],
            forbid: vec!["TODO".into(), "lorem".into()],
            canonical: false,
            command: Some("make lint".into()),
            commands: Vec::new(),
            command_timeout: Duration::from_secs(120),
            approve: true,
            validators: Vec::new(),
        }
    );
}

#[test]
fn streams_override_agent_and_checks_key_by_key() {
    let f = ok(r#"
[agent]
model = "sonnet"
max_attempts = 2
env = { A = "1", B = "2" }
args = ["--x"]

[checks]
words = [10, 20]
forbid = ["TODO"]

[[streams]]
id = "direct"
prompt = "prompts/plain.md"
model = "opus"
timeout = "5m"
env = { B = "two", C = "3" }
approve = true

[[streams]]
id = "sub"
prompt = "prompts/plain.md"
outputs = ["sub.md"]
agent = { max_attempts = 7, args = [] }

[streams.checks]
words = [1, 2]
require = ["x"]

[[streams]]
id = "plain"
prompt = "prompts/plain.md"
"#);
    let d = f.stream("direct").unwrap();
    assert_eq!(d.agent.model, "opus");
    assert_eq!(d.agent.max_attempts, 2);
    assert_eq!(d.agent.timeout, Duration::from_secs(300));
    assert_eq!(d.agent.args, vec!["--x".to_string()]);
    let env: Vec<(&str, &str)> = d
        .agent
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, vec![("A", "1"), ("B", "two"), ("C", "3")]);
    assert!(d.checks.approve);
    assert_eq!(d.checks.words, Some((10, 20)));

    let s = f.stream("sub").unwrap();
    assert_eq!(s.agent.model, "sonnet");
    assert_eq!(s.agent.max_attempts, 7);
    assert!(s.agent.args.is_empty());
    assert_eq!(s.checks.words, Some((1, 2)));
    assert_eq!(s.checks.require, vec!["x".to_string()]);
    assert_eq!(s.checks.forbid, vec!["TODO".to_string()]);
    assert!(!s.checks.approve);

    let p = f.stream("plain").unwrap();
    assert_eq!(p.agent.max_attempts, 2);
    assert_eq!(p.agent.env.len(), 2);
    assert_eq!(p.checks.words, Some((10, 20)));
}

#[test]
fn streams_agent_header_and_checks_approve() {
    let f = ok(&one(
        "[streams.agent]\nmodel = \"haiku\"\n[streams.checks]\napprove = true\n",
    ));
    assert_eq!(f.streams[0].agent.model, "haiku");
    assert!(f.streams[0].checks.approve);
}

#[test]
fn a_key_set_twice_for_a_stream_is_refused() {
    let e = err(&one(
        "model = \"opus\"\n[streams.agent]\nmodel = \"haiku\"\n",
    ));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (6, 1, "`model` is set twice for stream `a` (also at line 4)")
    );
    let e = err(&one("approve = true\n[streams.checks]\napprove = false\n"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            6,
            1,
            "`approve` is set twice for stream `a` (also at line 4)"
        )
    );
}

#[test]
fn durations() {
    for (text, d) in [
        ("\"40m\"", Duration::from_secs(2400)),
        ("\"1h30m\"", Duration::from_secs(5400)),
        ("\"10s\"", Duration::from_secs(10)),
        ("\"500ms\"", Duration::from_millis(500)),
        ("\"90\"", Duration::from_secs(90)),
        ("90", Duration::from_secs(90)),
    ] {
        let f = ok(&format!("[agent]\ntimeout = {text}\n{}", one("")));
        assert_eq!(f.streams[0].agent.timeout, d, "{text}");
    }
    assert_eq!(parse_duration(" 1h 2m "), Some(Duration::from_secs(3720)));
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(parse_duration(""), None);

    let e = err("[agent]\ntimeout = \"forty\"\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 11, "`timeout`: \"forty\" is not a duration")
    );
    assert!(e.help.contains("\"1h30m\""), "{}", e.help);
    assert_eq!(
        at("[agent]\nidle_timeout = -5\n"),
        (
            2,
            16,
            "`idle_timeout` must not be negative, found -5".into()
        )
    );
    assert_eq!(
        at("[agent]\ntimeout = \"0s\"\n"),
        (2, 11, "`timeout` must be longer than zero".into())
    );
    assert_eq!(
        at("[checks]\ncommand_timeout = true\n"),
        (
            2,
            19,
            "`command_timeout` must be a duration (a string such as \"40m\") or a number of \
             seconds, found boolean"
                .into()
        )
    );
    // Zero is fine where it means "no pause".
    let f = ok(&format!(
        "[swarm]\nspawn_interval = 0\n{}",
        one("kill_grace = \"0s\"\n")
    ));
    assert_eq!(f.swarm.spawn_interval, Duration::ZERO);
    assert_eq!(f.streams[0].agent.kill_grace, Duration::ZERO);
}

#[test]
fn a_lease_under_a_second_and_a_bad_remote_name_are_refused_where_written() {
    assert_eq!(ok(&one("")).swarm.lease, Duration::from_secs(120));
    let (line, col, msg) = at("[swarm]\nlease = \"500ms\"\n");
    assert_eq!((line, col), (2, 9));
    assert!(msg.contains("`lease` must be at least 1s"), "{msg}");
    let e = err("[swarm]\nremote = \"-x y\"\n");
    assert_eq!((e.line, e.col), (2, 10));
    assert!(
        e.message.contains("not a valid git remote name"),
        "{}",
        e.message
    );
    assert!(e.help.contains("git remote -v"), "{}", e.help);
}

#[test]
fn unknown_keys_name_key_table_position_and_valid_keys() {
    let e = err(&format!("[agent]\nmodle = \"opus\"\n{}", one("")));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 1, "unknown key `modle` in [agent]")
    );
    assert!(e.help.starts_with("did you mean `model`? "), "{}", e.help);
    assert!(
        e.help.ends_with(
            "valid keys in [agent]: command, args, model, permission_mode, timeout, \
             idle_timeout, max_attempts, env, kill_grace, resume, max_budget_usd, sandbox, agent_type"
        ),
        "{}",
        e.help
    );

    let e = err("[swarm]\nmax_paralel = 3\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 1, "unknown key `max_paralel` in [swarm]")
    );
    assert!(e.help.starts_with("did you mean `max_parallel`?"));

    let e = err("[checks]\nmodel = \"x\"\n");
    assert_eq!(e.message, "unknown key `model` in [checks]");
    assert!(
        e.help.starts_with("`model` belongs in [agent]. "),
        "{}",
        e.help
    );

    let e = err("model = \"opus\"\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            1,
            1,
            "unknown key `model` in the top level of the swarm file"
        )
    );
    assert!(e.help.starts_with("`model` belongs in [agent]. "));

    let e = err("[stream]\nid = \"a\"\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            1,
            2,
            "unknown key `stream` in the top level of the swarm file"
        )
    );
    assert!(e.help.starts_with("did you mean `streams`? "));

    let e = err(&one("   dependencies = []\n"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (4, 4, "unknown key `dependencies` in [[streams]] `a`")
    );
    assert!(e.help.starts_with("did you mean `depends_on`? "));
    assert!(e.help.contains("valid keys in [[streams]] `a`: id, prompt, vars, inputs, outputs, depends_on, approve, agent, checks, for_each, allow_empty, validation_report, command, args, model"));

    let e = err(&one("words = [1, 2]\n"));
    assert_eq!(e.message, "unknown key `words` in [[streams]] `a`");
    assert!(e.help.starts_with("`words` belongs in [streams.checks]"));

    let e = err(&one(
        "[streams.agent]\nmodel = \"x\"\noutputs = [\"x.md\"]\n",
    ));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            6,
            1,
            "unknown key `outputs` in [streams.agent] of stream `a`"
        )
    );
    assert!(e.help.contains("move it above the header"));

    let e = err(&one("[streams.checks]\nwords = [1, 2]\nwordz = 3\n"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            6,
            1,
            "unknown key `wordz` in [streams.checks] of stream `a`"
        )
    );
    assert!(e.help.starts_with("did you mean `words`? "));

    // No close match: no suggestion, still the list.
    let e = err("[swarm]\nzzzzzz = 1\n");
    assert!(e
        .help
        .starts_with("valid keys in [swarm]: target, max_parallel"));
}

#[test]
fn the_first_unknown_key_in_file_order_is_reported() {
    // toml keeps keys sorted by name; messages follow the file.
    let e = err("[agent]\nzeta = 1\nalpha = 2\n");
    assert_eq!(e.message, "unknown key `zeta` in [agent]");
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let cases: &[(&str, (usize, usize, &str))] = &[
        (
            "[swarm]\nmax_parallel = \"4\"\n",
            (
                2,
                16,
                "`max_parallel` must be a positive integer, found string",
            ),
        ),
        (
            "[swarm]\nmax_parallel = 0\n",
            (2, 16, "`max_parallel` must be a positive integer, found 0"),
        ),
        (
            "[swarm]\nmax_parallel = 2.5\n",
            (
                2,
                16,
                "`max_parallel` must be a positive integer, found float",
            ),
        ),
        (
            "[swarm]\ntarget = 1\n",
            (2, 10, "`target` must be a string, found integer"),
        ),
        (
            "[swarm]\ntarget = \"loki/a\"\n",
            (
                2,
                10,
                "`target` \"loki/a\" is a stream's branch: loki makes `loki/<id>` for each stream and deletes it after the merge",
            ),
        ),
        (
            "[swarm]\nspawn_interval = 18446744073709551615\n",
            (2, 18, "`spawn_interval` is too long: at most 365 days"),
        ),
        (
            "[agent]\ntimeout = \"400days\"\n",
            (2, 11, "`timeout` is too long: at most 365 days"),
        ),
        (
            "[swarm]\ntarget = \"a..b\"\n",
            (2, 10, "`target` \"a..b\" is not a valid branch name"),
        ),
        (
            "[swarm]\nmax_budget_usd = -1\n",
            (
                2,
                18,
                "`max_budget_usd` must be a non-negative number of US dollars, found -1",
            ),
        ),
        (
            "[swarm]\nmax_budget_usd = \"5\"\n",
            (
                2,
                18,
                "`max_budget_usd` must be a non-negative number of US dollars, found string",
            ),
        ),
        (
            "[agent]\nmax_attempts = -2\n",
            (2, 16, "`max_attempts` must be a positive integer, found -2"),
        ),
        (
            "[agent]\nmax_attempts = 99999999999\n",
            (
                2,
                16,
                "`max_attempts` is too large: at most 4294967295, found 99999999999",
            ),
        ),
        (
            "[agent]\nargs = \"--fast\"\n",
            (2, 8, "`args` must be an array of strings, found string"),
        ),
        (
            "[agent]\nargs = [\"a\", 2]\n",
            (2, 14, "`args` entries must be strings, found integer"),
        ),
        (
            "[agent]\nresume = \"yes\"\n",
            (2, 10, "`resume` must be true or false, found string"),
        ),
        (
            "[agent]\ncommand = \"\"\n",
            (2, 11, "`command` must not be empty"),
        ),
        (
            "[agent]\nenv = { A = 1 }\n",
            (2, 13, "`env.A` must be a string, found integer"),
        ),
        (
            "[agent]\nenv = [\"A=1\"]\n",
            (2, 7, "`env` must be a table, found array"),
        ),
        (
            "[agent]\npermission_mode = \"acceptedits\"\n",
            (
                2,
                19,
                "`permission_mode` must be one of default, acceptEdits, plan, \
                 bypassPermissions, dontAsk, auto; found \"acceptedits\"",
            ),
        ),
        (
            "[checks]\nwords = 500\n",
            (
                2,
                9,
                "`words` must be [min, max], two whole numbers, found integer",
            ),
        ),
        (
            "[checks]\nwords = [500]\n",
            (
                2,
                9,
                "`words` must be [min, max], two whole numbers, found 1 entries",
            ),
        ),
        (
            "[checks]\nwords = [500, \"900\"]\n",
            (
                2,
                15,
                "`words` entries must be non-negative integers, found string",
            ),
        ),
        (
            "[checks]\nwords = [-1, 9]\n",
            (
                2,
                10,
                "`words` entries must be non-negative integers, found -1",
            ),
        ),
        (
            "[checks]\nwords = [900, 500]\n",
            (2, 9, "`words` minimum 900 is greater than maximum 500"),
        ),
        (
            "[checks]\nword_tolerance = 1.5\n",
            (
                2,
                18,
                "`word_tolerance` must be a number from 0 to 1, found 1.5",
            ),
        ),
        (
            "[checks]\nrequire = [\"\"]\n",
            (2, 12, "`require` entries must not be empty"),
        ),
        (
            "[checks]\ncanonical = 1\n",
            (2, 13, "`canonical` must be true or false, found integer"),
        ),
        (
            "swarm = 3\n",
            (1, 9, "`swarm` must be a table, found integer"),
        ),
        (
            "streams = \"a\"\n",
            (1, 11, "`streams` must be an array of tables, found string"),
        ),
        (
            "streams = [1]\n",
            (1, 12, "each stream must be a table, found integer"),
        ),
    ];
    for (text, (line, col, msg)) in cases {
        let (l, c, m) = at(text);
        assert_eq!((l, c, m.as_str()), (*line, *col, *msg), "for {text:?}");
    }
    let e = err("[agent]\npermission_mode = \"acceptedits\"\n");
    assert!(
        e.help.starts_with("did you mean \"acceptEdits\"? "),
        "{}",
        e.help
    );
}

#[test]
fn every_claude_permission_mode_is_accepted() {
    for m in PERMISSION_MODES {
        let f = ok(&format!("[agent]\npermission_mode = \"{m}\"\n{}", one("")));
        assert_eq!(f.streams[0].agent.permission_mode, *m);
    }
}

#[test]
fn sandbox_is_none_or_bwrap_per_swarm_and_per_stream() {
    use crate::config::Sandbox;
    let f = ok(&format!("[agent]\nsandbox = \"bwrap\"\n{}", one("")));
    assert_eq!(f.streams[0].agent.sandbox, Sandbox::Bwrap);
    let f = ok(&format!(
        "[agent]\nsandbox = \"bwrap\"\n{}[streams.agent]\nsandbox = \"none\"\n",
        one("")
    ));
    assert_eq!(f.streams[0].agent.sandbox, Sandbox::None);
    let e = err(&format!("[agent]\nsandbox = \"docker\"\n{}", one("")));
    assert_eq!((e.line, e.col), (2, 11));
    assert!(
        e.message
            .contains("`sandbox` must be one of none, bwrap; found \"docker\""),
        "{}",
        e.message
    );
    assert!(e.help.contains("bubblewrap"), "{}", e.help);
}

#[test]
fn toml_syntax_errors_have_positions() {
    let e = err("[agent]\nmodel = sonnet\n");
    assert_eq!((e.line, e.col), (2, 9));
    assert!(e.message.starts_with("invalid TOML: "), "{}", e.message);
    assert!(e.help.contains("quotes"), "{}", e.help);

    let e = err("[agent]\nmodel = \"a\"\nmodel = \"b\"\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (3, 1, "invalid TOML: duplicate key `model`")
    );
}

#[test]
fn stream_ids_must_be_valid_branch_components() {
    for (id, col) in [
        ("Ch01", 6),
        ("ch 01", 6),
        ("-a", 6),
        ("a..b", 6),
        ("a.", 6),
        ("a.lock", 6),
        ("", 6),
    ] {
        let e = err(&format!(
            "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/plain.md\"\n"
        ));
        assert_eq!(
            (e.line, e.col, e.message.clone()),
            (2, col, format!("invalid stream id `{id}`"))
        );
        assert!(e.help.contains("loki/<id>"));
    }
    let e = err("[[streams]]\nid = \"Ch01\"\nprompt = \"prompts/plain.md\"\n");
    assert!(e.help.ends_with("; try `ch01`"), "{}", e.help);
    let long = "a".repeat(65);
    assert!(!valid_stream_id(&long));
    assert!(valid_stream_id(&"a".repeat(64)));
    for good in ["ch01", "a.b", "a_b-c", "0", "v1.2.3"] {
        assert!(valid_stream_id(good), "{good}");
    }
}

#[test]
fn missing_and_duplicate_ids() {
    let e = err("[[streams]]\nprompt = \"prompts/plain.md\"\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 1, "stream #1 has no `id`")
    );
    assert_eq!(
        at("[[streams]]\nid = 7\n"),
        (2, 6, "`id` must be a string, found integer".into())
    );
    let text = "[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n\n\
                [[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n\n\
                [[streams]]\n  id = \"a\"\nprompt = \"prompts/plain.md\"\n";
    let e = err(text);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (10, 8, "duplicate stream id `a` (first used at line 2)")
    );
    let e = err("[[streams]]\nid = \"a\"\n");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 1, "stream `a` has no `prompt`")
    );
    assert!(e.help.contains("prompt = \"prompts/a.md\""));
}

#[test]
fn depends_on_must_name_other_streams() {
    let text = "[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n\n\
                [[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n\
                depends_on = [\"a\", \"c\"]\n";
    let e = err(text);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (8, 20, "stream `b` depends on unknown stream `c`")
    );
    assert!(e
        .help
        .ends_with("depends_on lists ids of streams in this file: a, b"));

    let e = err(&one(
        "depends_on = [\"ch1\"]\n[[streams]]\nid = \"ch01\"\nprompt = \"prompts/plain.md\"\n",
    ));
    assert!(e.help.starts_with("did you mean `ch01`? "), "{}", e.help);

    let e = err(&one("depends_on = [\"a\"]\n"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (4, 15, "stream `a` depends on itself")
    );
    assert_eq!(
        at(&one("depends_on = \"b\"\n")),
        (
            4,
            14,
            "`depends_on` must be an array of strings, found string".into()
        )
    );
}

#[test]
fn forward_references_and_repeats_are_fine() {
    let f = ok(&one(
        "depends_on = [\"b\", \"b\"]\n[[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n",
    ));
    assert_eq!(f.streams[0].depends_on, vec!["b".to_string()]);
    assert_eq!(
        plan::topo_order(&f.streams).unwrap(),
        vec!["b".to_string(), "a".to_string()]
    );
}

#[test]
fn cycles_are_reported_in_order_at_a_depends_on_entry() {
    let text = r#"[[streams]]
id = "a"
prompt = "prompts/plain.md"
depends_on = ["b"]

[[streams]]
id = "b"
prompt = "prompts/plain.md"
depends_on = ["c"]

[[streams]]
id = "c"
prompt = "prompts/plain.md"
depends_on = ["a"]
"#;
    let e = err(text);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (4, 15, "dependency cycle: a -> b -> c -> a")
    );
    assert!(e.help.contains("\"b\" from stream `a`"), "{}", e.help);
}

#[test]
fn var_and_input_names_are_checked() {
    assert_eq!(
        at(&one("vars = { \"my-var\" = \"x\" }\n")),
        (
            4,
            10,
            "`vars`: \"my-var\" is not a valid placeholder name".into()
        )
    );
    let e = err(&one("vars = { \"1st\" = \"x\" }\n"));
    assert!(e.help.contains("e.g. `_1ST`"), "{}", e.help);
    assert_eq!(
        at(&one("vars = { STREAM_ID = \"x\" }\n")),
        (
            4,
            10,
            "`vars`: {{STREAM_ID}} is a built-in placeholder that loki fills itself".into()
        )
    );
    assert_eq!(
        at(&one("vars = { X = [1] }\n")),
        (
            4,
            14,
            "`vars.X` must be a string, number or boolean, found array".into()
        )
    );
    assert_eq!(
        at(&one("inputs = { X = 3 }\n")),
        (4, 16, "`inputs.X` must be a string, found integer".into())
    );
    assert_eq!(
        at(&one("vars = { X = \"1\" }\ninputs = { X = \"x.md\" }\n")),
        (
            5,
            12,
            "{{X}} is both a var and an input of stream `a`".into()
        )
    );
    assert_eq!(
        at(&one("inputs = { X = \"../x.md\" }\n")),
        (
            4,
            16,
            "`inputs.X`: path \"../x.md\" must not contain `..`".into()
        )
    );
}

#[test]
fn output_paths_stay_in_the_worktree() {
    let cases = [
        (
            "/abs.md",
            "must be relative to the repository root, not absolute",
        ),
        ("../up.md", "must not contain `..`"),
        ("a/../../up.md", "must not contain `..`"),
        (
            ".loki/state/x",
            "must not be under `.loki/` (loki's own folder)",
        ),
        (
            "./.loki/x",
            "must not be under `.loki/` (loki's own folder)",
        ),
        (
            ".git/config",
            "must not be inside `.git` (in any letter case)",
        ),
        (
            "sub/.git/x",
            "must not be inside `.git` (in any letter case)",
        ),
        (".GIT/x", "must not be inside `.git` (in any letter case)"),
        (
            "sub/.Git/x",
            "must not be inside `.git` (in any letter case)",
        ),
        (".LOKI/x", "must not be under `.loki/` (loki's own folder)"),
        ("chapters/", "names a folder: it must name a file"),
        (".", "must name a file"),
    ];
    for (p, why) in cases {
        let e = err(&one(&format!("outputs = [\"ok.md\", \"{p}\"]\n")));
        assert_eq!(
            (e.line, e.col, e.message.clone()),
            (4, 21, format!("`outputs`: path \"{p}\" {why}"))
        );
    }
    assert_eq!(
        at(&one("outputs = [\"\"]\n")),
        (4, 12, "`outputs` entries must not be empty".into())
    );
    let f = ok(&one("outputs = [\"chapters/ch01.md\", \".lokirc\"]\n"));
    assert_eq!(f.streams[0].outputs, vec!["chapters/ch01.md", ".lokirc"]);
}

#[test]
fn at_least_one_stream_is_required() {
    for text in ["", "[swarm]\nmax_parallel = 2\n", "# nothing\n"] {
        let e = err(text);
        assert_eq!((e.line, e.col), (0, 0));
        assert_eq!(e.message, "the swarm file defines no streams");
        assert!(e.help.contains("[[streams]]\n    id = \"ch01\""));
    }
    let e = err("streams = []\n");
    assert_eq!((e.line, e.col), (1, 1));
    assert_eq!(e.message, "the swarm file defines no streams");
}

#[test]
fn an_output_listed_twice_is_refused_at_the_repeat() {
    let e = err(&one("outputs = [\"a.md\", \"b.md\", \"./a.md\"]\n"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            4,
            28,
            "`outputs`: \"./a.md\" is listed twice for stream `a` (first at line 4, column 12)"
        )
    );
    assert!(
        e.help.starts_with("remove the repeated entry"),
        "{}",
        e.help
    );
}

#[test]
fn require_without_outputs_is_refused() {
    let e = err(&format!(
        "[checks]\nrequire = [\"Mira\"]\n\n{}",
        one("outputs = []\n")
    ));
    assert_eq!((e.line, e.col), (7, 11));
    assert_eq!(
        e.message,
        "stream `a` has no outputs, but `require` terms are looked for only in outputs: \
         every attempt would fail"
    );
    assert!(e.help.contains("`require = []`"), "{}", e.help);
    assert!(e.help.contains("\"Mira\""), "{}", e.help);
    // Without the key, at the stream.
    let e = err(&format!("[checks]\nrequire = [\"Mira\"]\n\n{}", one("")));
    assert_eq!(e.line, 4);
    // A stream without outputs is otherwise fine, and may drop `require`.
    ok(&format!(
        "[checks]\nrequire = [\"Mira\"]\nwords = [1, 2]\n\n{}",
        one("checks = { require = [] }\n")
    ));
    ok(&one("outputs = []\n"));
}
