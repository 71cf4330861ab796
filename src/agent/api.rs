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

/// A subscription's usage window as claude reports it: a
/// `rate_limit_event` line, or the text of a final result cut off by the
/// limit.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLimit {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: String,
    /// When the window resets, in unix seconds, when known.
    pub resets_at: Option<i64>,
    /// `five_hour`, `seven_day`, `seven_day_opus`, … when given.
    pub kind: Option<String>,
    /// 0 to 1, when given.
    pub utilization: Option<f64>,
}

impl UsageLimit {
    pub fn rejected(&self) -> bool {
        self.status == "rejected"
    }

    /// How people name the window: "the session limit" for the 5-hour
    /// one, "the weekly limit" for the 7-day ones.
    pub fn name(&self) -> String {
        match self.kind.as_deref() {
            Some("five_hour") | None => "the session limit".into(),
            Some(k) if k.starts_with("seven_day") => "the weekly limit".into(),
            Some(k) => format!("the {} limit", k.replace('_', " ")),
        }
    }
}

/// The usage limit a final result's text reports, if it is one: Claude
/// Code's `Claude AI usage limit reached|<unix seconds>`, or its wording
/// for a subscription ("You've hit your session limit · resets 3am", with
/// the reset time read as the next such local time after `now`).
pub fn usage_limit_in_result(
    text: &str,
    now: chrono::DateTime<chrono::Local>,
) -> Option<UsageLimit> {
    let lower = text.to_lowercase();
    // claude's words for a server's throttle, which is no usage window.
    if lower.contains("not your usage limit") {
        return None;
    }
    if let Some(i) = lower.find("usage limit reached|") {
        let rest = &text[i + "usage limit reached|".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        return Some(UsageLimit {
            status: "rejected".into(),
            resets_at: digits.parse().ok(),
            kind: None,
            utilization: None,
        });
    }
    let hit = lower.contains("hit your") && lower.contains("limit");
    if !hit && !lower.contains("usage limit reached") {
        return None;
    }
    let kind = if lower.contains("weekly") {
        Some("seven_day".to_string())
    } else {
        Some("five_hour".to_string())
    };
    let resets_at = lower
        .find("resets")
        .and_then(|i| reset_time(&lower[i + "resets".len()..], now));
    Some(UsageLimit {
        status: "rejected".into(),
        resets_at,
        kind,
        utilization: None,
    })
}

/// `" 3am"`, `" at 3:30pm (Europe/Berlin)"`, `" 15:00"`: the next local
/// time of that hour after `now`, in unix seconds.
fn reset_time(text: &str, now: chrono::DateTime<chrono::Local>) -> Option<i64> {
    use chrono::{Duration, TimeZone};
    let t = text.trim_start().trim_start_matches("at").trim_start();
    let clock: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':')
        .collect();
    let rest = t[clock.len()..].trim_start();
    let (h, m) = match clock.split_once(':') {
        Some((h, m)) => (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?),
        None => (clock.parse::<u32>().ok()?, 0),
    };
    let h = if rest.starts_with("pm") && h < 12 {
        h + 12
    } else if rest.starts_with("am") && h == 12 {
        0
    } else {
        h
    };
    if h > 23 || m > 59 {
        return None;
    }
    // "resets 4:47pm (UTC)": claude names the zone when it is not local.
    if rest.contains("(utc)") {
        let now = now.with_timezone(&chrono::Utc);
        let mut at = chrono::Utc.from_utc_datetime(&now.date_naive().and_hms_opt(h, m, 0)?);
        // The text says the minute: within it, the reset is now, not in a day.
        if at + Duration::minutes(1) <= now {
            at += Duration::days(1);
        }
        return Some(at.timestamp());
    }
    let today = now.date_naive().and_hms_opt(h, m, 0)?;
    let mut at = chrono::Local.from_local_datetime(&today).earliest()?;
    if at + Duration::minutes(1) <= now {
        at += Duration::days(1);
    }
    Some(at.timestamp())
}

#[cfg(test)]
mod usage_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn usage_limits_are_read_from_results() {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 22, 10, 0)
            .unwrap();
        let u = usage_limit_in_result("Claude AI usage limit reached|1764640800", now).unwrap();
        assert!(u.rejected());
        assert_eq!(u.resets_at, Some(1764640800));
        let u = usage_limit_in_result("You've hit your session limit · resets 3am", now).unwrap();
        let expect = chrono::Local
            .with_ymd_and_hms(2026, 12, 2, 3, 0, 0)
            .unwrap();
        assert_eq!(u.resets_at, Some(expect.timestamp()));
        assert_eq!(u.name(), "the session limit");
        let u =
            usage_limit_in_result("You've hit your weekly limit · resets at 11:30pm", now).unwrap();
        let expect = chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 23, 30, 0)
            .unwrap();
        assert_eq!(u.resets_at, Some(expect.timestamp()));
        assert_eq!(u.name(), "the weekly limit");
        assert_eq!(usage_limit_in_result("A chapter about limits.", now), None);
        // What claude 2.1.197 prints for a real limit, and for a throttle.
        let u = usage_limit_in_result("You've hit your session limit · resets 4:47pm (UTC)", now)
            .unwrap();
        let utc = now.with_timezone(&chrono::Utc);
        let mut expect =
            chrono::Utc.from_utc_datetime(&utc.date_naive().and_hms_opt(16, 47, 0).unwrap());
        if expect + chrono::Duration::minutes(1) <= utc {
            expect += chrono::Duration::days(1);
        }
        assert_eq!(u.resets_at, Some(expect.timestamp()));
        // Within the minute it names, the reset is that minute, not tomorrow.
        let late = chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 3, 0, 40)
            .unwrap();
        let u = usage_limit_in_result("You've hit your session limit · resets 3am", late).unwrap();
        let expect = chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
            .unwrap();
        assert_eq!(u.resets_at, Some(expect.timestamp()));
        assert_eq!(
            usage_limit_in_result(
                "API Error: Server is temporarily limiting requests (not your usage limit) · \
                 You have hit your five-hour limit",
                now
            ),
            None
        );
    }
}
