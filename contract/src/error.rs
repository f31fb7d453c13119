//! How errors quote what they were given: a field, an excerpt of the bad value, the reason.

/// A value that does not parse, named by its field. The controller reports it as
/// `IpamError::InvalidValue`; the agent and the sidecar as what they read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {} is invalid: {reason}", excerpt(.value))]
pub struct InvalidValue {
    pub field: String,
    pub value: String,
    pub reason: String,
}

/// How many characters of bad input an error quotes at most.
pub const EXCERPT_CHARS: usize = 64;

/// Bad input as an error quotes it: Debug-quoted, at most [`EXCERPT_CHARS`] characters, with how much was
/// left out. A huge bad file must not come back whole in a message (or a log line, or a condition).
pub fn excerpt(text: &str) -> String {
    let count = text.chars().count();
    if count <= EXCERPT_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(EXCERPT_CHARS).collect();
    format!("{head:?}… ({} more bytes)", text.len() - head.len())
}

/// A message that may embed input (a deserializer's, say), cut to at most `max` characters: the
/// beginning and the end (where parsers put the location) are kept.
pub fn shorten(message: &str, max: usize) -> String {
    let count = message.chars().count();
    if count <= max {
        return message.to_string();
    }
    let keep = max.saturating_sub(20) / 2;
    let head: String = message.chars().take(keep).collect();
    let tail: String = message.chars().skip(count - keep).collect();
    format!("{head} … [{} characters left out] … {tail}", count - 2 * keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_say_what_was_left_out() {
        assert_eq!(excerpt("abc"), "\"abc\"");
        let huge = "x".repeat(1_000_000);
        let e = excerpt(&huge);
        assert!(e.len() < 100 && e.contains("999936 more bytes"), "{e}");
        let multibyte = "ä".repeat(100);
        assert!(excerpt(&multibyte).contains("72 more bytes"));
        let msg = format!("invalid type: string \"{huge}\", expected struct FileConfig at line 1 column 1");
        let s = shorten(&msg, 300);
        assert!(s.chars().count() <= 340 && s.starts_with("invalid type") && s.ends_with("line 1 column 1"), "{s}");
        assert_eq!(shorten("short", 300), "short");
    }

    #[test]
    fn an_invalid_value_quotes_only_an_excerpt_of_it() {
        let huge = "\u{18}".repeat(10_000);
        let value = InvalidValue { field: "f".into(), value: huge, reason: "r".into() }.to_string();
        assert!(value.len() < 600 && value.starts_with("f: "), "{value}");
    }
}
