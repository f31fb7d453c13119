//! What can go wrong in allocation and validation. Every message names the field and says how to fix it.

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{field}: {value:?} is not a valid CIDR ({reason}); write it as network/prefix, e.g. 192.168.128.0/22")]
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

    #[error("{field}: {value:?} is invalid: {reason}")]
    InvalidValue { field: String, value: String, reason: String },
}

impl IpamError {
    /// A short CamelCase reason, for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidCidr { .. } => "InvalidCidr",
            Self::Missing { .. } => "MissingConfiguration",
            Self::Overlap { .. } => "Overlap",
            Self::Exhausted { .. } => "Exhausted",
            Self::InvalidValue { .. } => "InvalidValue",
        }
    }
}
