//! What claude's final error says about the API: an authentication
//! failure or a rate limit (Claude-specific, so it lives with the agent).

/// What an error `result` of claude says about the API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApiTrouble {
    Auth,
    RateLimit,
}

/// Classifies claude's final error: its `api_error_status` when given, else
/// the text (`API Error: Request rejected (429) …`, `Invalid API key · …`).
/// Codes count only as whole numbers beside "API error"/"status", so a
/// chapter about room 401 is not an authentication failure.
pub fn api_error_class(status: Option<u16>, result: &str) -> Option<ApiTrouble> {
    match status {
        Some(401 | 403) => return Some(ApiTrouble::Auth),
        Some(429 | 529) => return Some(ApiTrouble::RateLimit),
        _ => {}
    }
    let text = result.to_lowercase();
    let has_code = |code: &str| {
        text.match_indices(code).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + code.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit())
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    let api = text.contains("api error") || text.contains("api_error") || text.contains("status");
    if (api && (has_code("401") || has_code("403")))
        || text.contains("authentication")
        || text.contains("invalid api key")
        || text.contains("/login")
    {
        Some(ApiTrouble::Auth)
    } else if (api && (has_code("429") || has_code("529")))
        || text.contains("rate limit")
        || text.contains("rate_limit")
        || text.contains("overloaded")
    {
        Some(ApiTrouble::RateLimit)
    } else {
        None
    }
}

/// Whether claude's error says a `--resume` found no such session ("No
/// conversation found with session ID …": a session killed before its
/// transcript was written, or a cleared `~/.claude`).
pub fn resume_failed(error: &str) -> bool {
    error.to_lowercase().contains("no conversation found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_session_is_told_by_claudes_words() {
        assert!(resume_failed("No conversation found with session ID: 1234"));
        assert!(!resume_failed("No conversation about it"));
    }

    #[test]
    fn api_errors_are_classified_by_status_then_text() {
        use ApiTrouble::*;
        let c = api_error_class;
        assert_eq!(
            c(Some(401), "Invalid API key · Fix external API key"),
            Some(Auth)
        );
        assert_eq!(c(Some(403), ""), Some(Auth));
        assert_eq!(c(Some(429), ""), Some(RateLimit));
        assert_eq!(c(Some(529), ""), Some(RateLimit));
        assert_eq!(c(None, "Invalid API key · Please run /login"), Some(Auth));
        assert_eq!(
            c(
                None,
                "API Error: Request rejected (429) · rate limit (mock)"
            ),
            Some(RateLimit)
        );
        assert_eq!(c(None, "API Error: 529 Overloaded"), Some(RateLimit));
        assert_eq!(c(None, "Reached max turns (12)"), None);
        assert_eq!(c(None, "the guest in room 401 left at 4290"), None);
        assert_eq!(c(Some(500), "API Error: 500 internal"), None);
    }
}
