//! What can go wrong in allocation and validation. Every message names the field and says how to fix it.

use ipnet::IpNet;
pub use kubelink_contract::error::{EXCERPT_CHARS, InvalidValue, excerpt, shorten};

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

    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),

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
            Self::InvalidValue(_) => "InvalidValue",
            Self::WrongType { .. } => "InvalidType",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_a_value_quote_only_an_excerpt_of_it() {
        // Found by fuzzing: a CIDR of control characters came back whole, six bytes per character.
        let huge = "\u{18}".repeat(10_000);
        let cidr = crate::validate::parse_cidr("spec.wireguard.cidr", &huge).unwrap_err().to_string();
        assert!(cidr.len() < 600 && cidr.starts_with("spec.wireguard.cidr: ") && cidr.contains("more bytes"), "{cidr}");
        let value = IpamError::from(InvalidValue { field: "f".into(), value: huge, reason: "r".into() }).to_string();
        assert!(value.len() < 600, "{value}");
    }
}
