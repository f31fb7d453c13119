//! What can go wrong in allocation and validation. Every message names the field and says how to fix it.

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{field}: {} is not a valid CIDR ({reason}); write it as network/prefix, e.g. 192.168.128.0/22", excerpt(.value))]
    InvalidCidr { field: String, value: String, reason: String },

    #[error("{field} is not set; {fix}")]
    Missing { field: String, fix: String },

    #[error(
        "{field} {cidr} overlaps {with} {with_cidr}; the WireGuard CIDR must share no address with it, pick \
         another range"
    )]
    Overlap { field: String, cidr: IpNet, with: String, with_cidr: IpNet },

    #[error(
        "{field} {cidr} is exhausted: all {capacity} assignable addresses are taken; use a larger range (shorter \
         prefix) or remove shoots from the tunnel"
    )]
    Exhausted { field: String, cidr: IpNet, capacity: u128 },

    #[error("{field}: {} is invalid: {reason}", excerpt(.value))]
    InvalidValue { field: String, value: String, reason: String },

    #[error("{object} {field}: {reason}; write the field with its type ({fix})")]
    WrongType { object: String, field: String, reason: String, fix: String },
}

impl IpamError {
    /// `field`'s range `cidr` has no free address left.
    pub fn exhausted(field: &str, cidr: IpNet) -> Self {
        IpamError::Exhausted { field: field.into(), cidr, capacity: crate::alloc::Pool::new(cidr).capacity() }
    }

    /// A short CamelCase reason, for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidCidr { .. } => "InvalidCidr",
            Self::Missing { .. } => "MissingConfiguration",
            Self::Overlap { .. } => "Overlap",
            Self::Exhausted { .. } => "Exhausted",
            Self::InvalidValue { .. } => "InvalidValue",
            Self::WrongType { .. } => "InvalidType",
        }
    }
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
    fn errors_about_a_value_quote_only_an_excerpt_of_it() {
        // Found by fuzzing: a CIDR of control characters came back whole, six bytes per character.
        let huge = "\u{18}".repeat(10_000);
        let cidr = crate::validate::parse_cidr("spec.wireguard.cidr", &huge).unwrap_err().to_string();
        assert!(cidr.len() < 600 && cidr.starts_with("spec.wireguard.cidr: ") && cidr.contains("more bytes"), "{cidr}");
        let value = IpamError::InvalidValue { field: "f".into(), value: huge, reason: "r".into() }.to_string();
        assert!(value.len() < 600, "{value}");
    }
}
