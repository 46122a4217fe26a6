//! The context stage: facts about the moment of a reply, as a pure function of the conversation,
//! the fan's profile, the creator's timezone and `now`.
//!
//! Owns what "late night", "returning after a gap" and "how long this chat has gone on" mean and
//! how they are worded for the signature's context field. It never reads a clock: `now` is passed
//! in, which is what makes `--now` and the table tests possible.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::Serialize;

use crate::conversation::{FanProfile, Message};

/// A silence at least this long starts a new session; a fan writing after it is "returning".
pub const SESSION_GAP_SECONDS: i64 = 6 * 3600;

/// The facts, structured for `--json` and worded by [`Facts::render`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// The creator's local date and time, e.g. `Saturday 2026-11-28 23:40`.
    pub local_time: String,
    /// The creator's timezone.
    pub timezone: String,
    /// Part of the creator's day: late night, early morning, morning, midday, afternoon, evening, night.
    pub part_of_day: &'static str,
    /// Messages in the conversation so far, the current one included.
    pub messages: usize,
    /// Seconds since the current session's first message, when timestamps are known.
    pub session_seconds: Option<i64>,
    /// Seconds since the fan's previous message, when known.
    pub since_previous_fan_message_seconds: Option<i64>,
    /// When the fan is back after a silence of at least [`SESSION_GAP_SECONDS`], how long it was.
    pub returning_after_seconds: Option<i64>,
    /// The fan's profile, worded, when known.
    pub fan_profile: Option<String>,
    /// How the fan seems from their last messages (`safety::mood`), when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mood: Option<String>,
    /// Extra notes from later stages (e.g. the topic filter, the mood).
    pub notes: Vec<String>,
}

/// Computes the facts. `history` ends with the fan's current message.
pub fn facts(
    history: &[Message],
    fan: Option<&FanProfile>,
    tz: &TimeZone,
    tz_name: &str,
    now: Timestamp,
) -> Facts {
    let local = now.to_zoned_datetime(tz.clone());
    let stamps: Vec<Option<Timestamp>> = history.iter().map(|m| m.sent_at).collect();

    // The current session starts after the last gap of SESSION_GAP_SECONDS or more.
    let mut session_start = None;
    let mut previous: Option<Timestamp> = None;
    let mut returning_after = None;
    for (i, stamp) in stamps.iter().enumerate() {
        let Some(t) = *stamp else { continue };
        match previous {
            Some(p) if seconds(p, t) >= SESSION_GAP_SECONDS => {
                session_start = Some(t);
                returning_after = (i + 1 == stamps.len() && !history[i].from_creator).then(|| seconds(p, t));
            }
            None => session_start = Some(t),
            _ => {}
        }
        previous = Some(t);
    }

    let fan_positions: Vec<usize> = (0..history.len()).filter(|&i| !history[i].from_creator).collect();
    let since_previous_fan = match fan_positions.as_slice() {
        [.., before, last] => match (history[*before].sent_at, history[*last].sent_at.or(Some(now))) {
            (Some(a), Some(b)) => Some(seconds(a, b)),
            _ => None,
        },
        _ => None,
    };

    Facts {
        local_time: local.strftime("%A %Y-%m-%d %H:%M").to_string(),
        timezone: tz_name.to_string(),
        part_of_day: part_of_day(&local),
        messages: history.len(),
        session_seconds: session_start.map(|s| seconds(s, now).max(0)),
        since_previous_fan_message_seconds: since_previous_fan,
        returning_after_seconds: returning_after,
        fan_profile: fan.and_then(profile_text),
        mood: None,
        notes: Vec::new(),
    }
}

impl Facts {
    /// The facts as the compact text of the context field.
    pub fn render(&self) -> String {
        let mut lines = vec![format!(
            "your local time: {} ({}, {})",
            self.local_time, self.part_of_day, self.timezone
        )];
        let mut chat = format!(
            "{} message{} so far",
            self.messages,
            if self.messages == 1 { "" } else { "s" }
        );
        match self.session_seconds {
            Some(s) if s < 60 => chat.push_str(", this chat started just now"),
            Some(s) => chat.push_str(&format!(", this chat started {} ago", duration(s))),
            None => {}
        }
        if let Some(s) = self.since_previous_fan_message_seconds {
            chat.push_str(&format!(", the fan's previous message was {} ago", duration(s)));
        }
        lines.push(chat);
        if let Some(s) = self.returning_after_seconds {
            lines.push(format!("the fan is back after {} away", duration(s)));
        }
        lines.extend(self.notes.iter().cloned());
        lines.join("\n")
    }
}

/// Part of the day for a local time.
pub fn part_of_day(local: &ZonedDateTime) -> &'static str {
    match local.hour() {
        0..=4 => "late night",
        5..=8 => "early morning",
        9..=11 => "morning",
        12..=13 => "midday",
        14..=16 => "afternoon",
        17..=20 => "evening",
        _ => "night",
    }
}

/// A duration in seconds, worded compactly: `45 s`, `12 min`, `3 h 5 min`, `4 days`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match s / 86_400 {
            1 => "1 day".into(),
            d => format!("{d} days"),
        },
    }
}

/// A fan profile as `name: mike; location: Ohio; interests: hiking, film`.
pub fn profile_text(profile: &FanProfile) -> Option<String> {
    let parts: Vec<String> = profile
        .iter()
        .filter_map(|(key, value)| {
            let text = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) if s.trim().is_empty() => return None,
                serde_json::Value::String(s) => s.trim().to_string(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            Some(format!("{key}: {text}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn seconds(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn msg(from_creator: bool, sent_at: Option<&str>) -> Message {
        Message {
            from_creator,
            content: "x".into(),
            sent_at: sent_at.map(at),
        }
    }

    #[test]
    fn local_time_and_part_of_day_follow_the_timezone_and_dst() {
        // (case, now, timezone, expected local time, expected part of day)
        let cases = [
            (
                "new york winter",
                "2026-11-29T04:40:00Z",
                "America/New_York",
                "Saturday 2026-11-28 23:40",
                "night",
            ),
            (
                "new york summer (EDT)",
                "2026-07-01T04:40:00Z",
                "America/New_York",
                "Wednesday 2026-07-01 00:40",
                "late night",
            ),
            (
                "day before spring forward",
                "2026-03-08T06:30:00Z",
                "America/New_York",
                "Sunday 2026-03-08 01:30",
                "late night",
            ),
            (
                "after spring forward",
                "2026-03-08T07:30:00Z",
                "America/New_York",
                "Sunday 2026-03-08 03:30",
                "late night",
            ),
            (
                "berlin morning",
                "2026-11-28T09:15:00Z",
                "Europe/Berlin",
                "Saturday 2026-11-28 10:15",
                "morning",
            ),
            (
                "tokyo evening",
                "2026-11-28T09:15:00Z",
                "Asia/Tokyo",
                "Saturday 2026-11-28 18:15",
                "evening",
            ),
            (
                "utc midday",
                "2026-11-28T12:00:00Z",
                "UTC",
                "Saturday 2026-11-28 12:00",
                "midday",
            ),
        ];
        for (name, now, tz_name, local, part) in cases {
            let tz = TimeZone::get(tz_name).unwrap();
            let f = facts(&[msg(false, None)], None, &tz, tz_name, at(now));
            assert_eq!((f.local_time.as_str(), f.part_of_day), (local, part), "{name}");
        }
    }

    #[test]
    fn sessions_gaps_and_returning_fans() {
        let tz = TimeZone::UTC;
        // (case, history, now, session, since previous fan message, returning after)
        type Row<'a> = (
            &'a str,
            Vec<Message>,
            &'a str,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = vec![
            (
                "no timestamps",
                vec![msg(false, None), msg(true, None), msg(false, None)],
                "2026-01-01T10:00:00Z",
                None,
                None,
                None,
            ),
            (
                "steady chat",
                vec![
                    msg(false, Some("2026-01-01T10:00:00Z")),
                    msg(true, Some("2026-01-01T10:02:00Z")),
                    msg(false, Some("2026-01-01T10:05:00Z")),
                ],
                "2026-01-01T10:05:00Z",
                Some(300),
                Some(300),
                None,
            ),
            (
                "back after three days",
                vec![
                    msg(false, Some("2026-01-01T10:00:00Z")),
                    msg(true, Some("2026-01-01T10:02:00Z")),
                    msg(false, Some("2026-01-04T10:02:00Z")),
                ],
                "2026-01-04T10:03:00Z",
                Some(60),
                Some(3 * 86_400 + 120),
                Some(3 * 86_400),
            ),
            (
                "a gap earlier does not make the fan returning now",
                vec![
                    msg(false, Some("2026-01-01T10:00:00Z")),
                    msg(false, Some("2026-01-02T10:00:00Z")),
                    msg(true, Some("2026-01-02T10:01:00Z")),
                    msg(false, Some("2026-01-02T10:02:00Z")),
                ],
                "2026-01-02T10:02:00Z",
                Some(120),
                Some(120),
                None,
            ),
        ];
        for (name, history, now, session, since, returning) in rows {
            let f = facts(&history, None, &tz, "UTC", at(now));
            assert_eq!(
                (
                    f.session_seconds,
                    f.since_previous_fan_message_seconds,
                    f.returning_after_seconds
                ),
                (session, since, returning),
                "{name}"
            );
            assert_eq!(f.messages, history.len(), "{name}");
        }
    }

    #[test]
    fn renders_compactly_with_the_profile() {
        let mut profile = FanProfile::new();
        profile.insert("name".into(), "mike".into());
        profile.insert("interests".into(), serde_json::json!(["hiking", "film"]));
        let history = vec![
            msg(false, Some("2026-01-01T10:00:00Z")),
            msg(true, Some("2026-01-01T10:01:00Z")),
            msg(false, Some("2026-01-04T10:00:00Z")),
        ];
        let f = facts(
            &history,
            Some(&profile),
            &TimeZone::UTC,
            "UTC",
            at("2026-01-04T10:00:00Z"),
        );
        assert_eq!(
            f.fan_profile.as_deref(),
            Some("interests: hiking, film; name: mike")
        );
        assert_eq!(
            f.render(),
            "your local time: Sunday 2026-01-04 10:00 (morning, UTC)\n\
             3 messages so far, this chat started just now, the fan's previous message was 3 days ago\n\
             the fan is back after 2 days away"
        );
    }

    #[test]
    fn durations_are_worded_compactly() {
        let cases = [
            (5, "5 s"),
            (60, "1 min"),
            (3600, "1 h"),
            (3900, "1 h 5 min"),
            (86_400, "1 day"),
            (3 * 86_400, "3 days"),
        ];
        for (s, text) in cases {
            assert_eq!(duration(s), text);
        }
    }
}
