//! The stand-in agent of `loki run --rehearse`: a real process that honours
//! the agent contract and writes, for its stream, outputs that name the
//! stream, meet its word counts and contain its required terms. It proves
//! templates, inputs, dependencies and merges without spending tokens.

use anyhow::{Context, Result};

const FILLER: &[&str] = &[
    "the", "harbour", "light", "moved", "slowly", "across", "water", "while", "voices", "rose",
    "from", "the", "street", "below", "and", "somebody", "laughed", "near", "door", "evening", "a",
    "lantern", "swung", "over", "stones", "wind", "carried", "salt", "bells", "rang",
];

/// Filler words that are no part of any forbidden term, so no forbidden
/// word or phrase can come out of them (a rehearsal must not fail a check
/// the real agent would be told about).
fn filler(forbid: &[String]) -> Vec<&'static str> {
    let words: Vec<&str> = FILLER
        .iter()
        .copied()
        .filter(|w| !forbid.iter().any(|t| crate::checks::mentions(t, w)))
        .collect();
    if words.is_empty() {
        vec!["lorem", "ipsum"]
    } else {
        words
    }
}

/// Runs the stand-in; returns the exit code. As a validator (it has a
/// `LOKI_VERDICT_FILE`) it reads the draft and passes it: a rehearsal
/// proves the validators' prompts and the stage, not their judgement.
pub fn main() -> Result<i32> {
    if let Ok(verdict) = std::env::var("LOKI_VERDICT_FILE") {
        let name = std::env::var("LOKI_VALIDATOR").unwrap_or_default();
        let prompt_file =
            std::env::var("LOKI_PROMPT_FILE").context("LOKI_PROMPT_FILE is not set")?;
        let prompt = std::fs::read_to_string(&prompt_file)
            .with_context(|| format!("reading the prompt {prompt_file}"))?;
        println!(
            "stand-in validator {name}: read {} words of the draft; pass",
            crate::checks::count_words(&prompt)
        );
        let text = serde_json::json!({ "status": "pass", "issues": [] }).to_string();
        std::fs::write(&verdict, text).with_context(|| format!("writing {verdict}"))?;
        return Ok(0);
    }
    let spec = std::env::var("LOKI_STAND_IN_SPEC").context(
        "LOKI_STAND_IN_SPEC is not set: the stand-in runs only under `loki run --rehearse`",
    )?;
    let spec: serde_json::Value =
        serde_json::from_str(&spec).context("reading LOKI_STAND_IN_SPEC")?;
    let id = std::env::var("LOKI_STREAM_ID")
        .unwrap_or_else(|_| spec["id"].as_str().unwrap_or("stream").to_string());
    let prompt_file = std::env::var("LOKI_PROMPT_FILE").context("LOKI_PROMPT_FILE is not set")?;
    let prompt = std::fs::read_to_string(&prompt_file)
        .with_context(|| format!("reading the prompt {prompt_file}"))?;
    let words = spec["words"]
        .as_array()
        .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)));
    let target = match words {
        Some((lo, hi)) => (lo + hi) / 2,
        None => 120,
    };
    let strings = |key: &str| -> Vec<String> {
        spec[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let require = strings("require");
    let forbid = strings("forbid");
    let words_ok = filler(&forbid);
    let outputs = strings("outputs");
    let name = id.strip_prefix("rh-").unwrap_or(&id);
    // `stand-in: slip "<term>" on the first attempt` in the prompt: the
    // first draft uses the term (a forbidden one, say), so a rehearsal or
    // the demo shows a failed check and the retry its feedback brings.
    let attempt: u32 = std::env::var("LOKI_ATTEMPT")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let slip = (attempt == 1).then(|| slip_term(&prompt)).flatten();
    let delay = std::env::var("LOKI_STAND_IN_DELAY_MS")
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(0);
    for out in &outputs {
        println!("writing {out}");
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let mut text = format!(
            "# {name}\n\nRehearsal draft for stream {name} ({} prompt lines).\n\n",
            prompt.lines().count()
        );
        if forbid.iter().any(|t| crate::checks::mentions(&text, t)) {
            text = "# Rehearsal\n\n".to_string();
        }
        if let Some(t) = &slip {
            text.push_str(&format!("{t}, the first draft said. "));
        }
        let mut n = crate::checks::count_words(&text);
        for t in &require {
            text.push_str(t);
            text.push_str(". ");
            n += crate::checks::count_words(t);
        }
        let mut i = 0;
        while n < target {
            text.push_str(words_ok[i % words_ok.len()]);
            text.push(if i % 12 == 11 { '.' } else { ' ' });
            if i % 60 == 59 {
                text.push_str("\n\n");
            }
            i += 1;
            n += 1;
        }
        text.push('\n');
        let path = std::path::Path::new(out);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {out}"))?;
    }
    println!("done: {} output(s) for {name}", outputs.len());
    Ok(0)
}

/// The term of a `stand-in: slip "<term>" on the first attempt` line.
fn slip_term(prompt: &str) -> Option<String> {
    prompt.lines().find_map(|l| {
        let rest = l.split_once("stand-in: slip \"")?.1;
        let (term, tail) = rest.split_once('"')?;
        tail.trim_start()
            .starts_with("on the first attempt")
            .then(|| term.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_line_names_the_term() {
        let p = "# ch03\n<!-- stand-in: slip \"suddenly\" on the first attempt -->\n";
        assert_eq!(slip_term(p).as_deref(), Some("suddenly"));
        assert_eq!(slip_term("stand-in: slip \"x\" always"), None);
    }

    #[test]
    fn filler_never_makes_a_forbidden_term() {
        let forbid = vec![
            "slowly".to_string(),
            "the harbour".to_string(),
            "Bells".into(),
        ];
        let words = filler(&forbid);
        let text = words.join(" ");
        for t in &forbid {
            assert!(!crate::checks::mentions(&text, t), "{t} in {text}");
        }
        assert!(words.contains(&"light"));
        assert_eq!(
            filler(&FILLER.iter().map(|w| w.to_string()).collect::<Vec<_>>()),
            ["lorem", "ipsum"]
        );
    }
}
