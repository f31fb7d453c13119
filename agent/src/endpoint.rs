//! WireGuard endpoints as written: `host:port` or `[v6]:port`. One parser for every edge (the
//! standalone file, the shoot Secret, `--slot-endpoints`); resolving a name is a separate step, done
//! once by the standalone file and again and again by the shoot's re-advertiser.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use kubelink_contract::excerpt;

const EXAMPLE: &str = "gw.example.org:51820";

/// A host (a DNS name, an IPv4 or an IPv6 literal) and a port other than 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// As written, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

/// What is wrong with an endpoint. `text` is an excerpt of the input, never all of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{text} needs the form host:port, e.g. {EXAMPLE}")]
    Form { text: String },
    #[error("{text}: the port must be a number 1..=65535, as in host:port, e.g. {EXAMPLE}")]
    Port { text: String },
    #[error("{text}: port 0 cannot be dialed; use 1..=65535, e.g. {EXAMPLE}")]
    PortZero { text: String },
    #[error("{text}: write an IPv6 address in brackets, e.g. [fd00::1]:51820")]
    Unbracketed { text: String },
    #[error("{text}: only an IPv6 address goes in brackets; write a name or an IPv4 address without, e.g. {EXAMPLE}")]
    NotIpv6 { text: String },
    #[error("{text}: all numbers but not an IPv4 address; write four numbers 0..=255, e.g. 10.0.0.1:51820")]
    Ipv4 { text: String },
    #[error(
        "{text}: the host is not a DNS name (dot-separated labels of letters, digits, '-' and '_', \
         at most 253 characters); write e.g. {EXAMPLE}"
    )]
    Host { text: String },
    #[error("cannot resolve {text}: {message}; check the name, or write an IP address")]
    Resolve { text: String, message: String },
    #[error("{text} resolves to no address; check the name, or write an IP address")]
    NoAddress { text: String },
}

impl Endpoint {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address when the host is a literal IP: no resolution needed.
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Resolves a name now, with the system resolver (blocking); the first address wins.
    pub fn resolve_now(&self) -> Result<SocketAddr, EndpointError> {
        if let Some(addr) = self.literal() {
            return Ok(addr);
        }
        let text = excerpt(&self.to_string());
        let mut addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| EndpointError::Resolve { text: text.clone(), message: e.to_string() })?;
        addrs.next().ok_or(EndpointError::NoAddress { text })
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, EndpointError> {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| EndpointError::Form { text: excerpt(text) })?;
        let port = parse_port(port, text)?;
        match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => Ok(Endpoint { host: v6.into(), port }),
            Some(_) => Err(EndpointError::NotIpv6 { text: excerpt(text) }),
            // In fd00::1:51820 the port is ambiguous: IPv6 literals need brackets.
            None if host.contains(':') => Err(EndpointError::Unbracketed { text: excerpt(text) }),
            None => check_bare_host(host, text).map(|()| Endpoint { host: host.into(), port }),
        }
    }
}

/// A port 1..=65535 in plain digits (u16's parser takes a leading '+', which would not print back
/// as written).
fn parse_port(port: &str, text: &str) -> Result<u16, EndpointError> {
    match port.bytes().all(|b| b.is_ascii_digit()).then(|| port.parse::<u16>()) {
        Some(Ok(0)) => Err(EndpointError::PortZero { text: excerpt(text) }),
        Some(Ok(port)) => Ok(port),
        _ => Err(EndpointError::Port { text: excerpt(text) }),
    }
}

/// An IPv4 literal or a DNS name: letters, digits, `-`, `_` and dots, at most 253 characters, one
/// trailing dot allowed (a fully qualified name). Found by fuzzing: `[[[[]]:4` used to pass as the
/// host `[[[]`. A name whose last label is all digits would be taken for an IPv4 address.
fn check_bare_host(host: &str, text: &str) -> Result<(), EndpointError> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let labels_ok = name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(label_char));
    if name.is_empty() || name.len() > 253 || !labels_ok {
        return Err(EndpointError::Host { text: excerpt(text) });
    }
    let numeric = name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if numeric && host.parse::<Ipv4Addr>().is_err() {
        return Err(EndpointError::Ipv4 { text: excerpt(text) });
    }
    Ok(())
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host and port when the text parses; else a word of the fix its error must give.
    type Want = Result<(&'static str, u16), &'static str>;

    #[test]
    fn endpoints_table() {
        let rows: &[(&str, Want)] = &[
            ("gw.example.org:51820", Ok(("gw.example.org", 51820))),
            ("gw.example.org.:51820", Ok(("gw.example.org.", 51820))), // fully qualified
            ("10.0.0.1:1", Ok(("10.0.0.1", 1))),
            ("[fd00::1]:65535", Ok(("fd00::1", 65535))),
            ("[::ffff:10.0.0.1]:51820", Ok(("::ffff:10.0.0.1", 51820))),
            ("lb-0_x.internal:51820", Ok(("lb-0_x.internal", 51820))),
            ("localhost:51820", Ok(("localhost", 51820))),
            ("gw.example.org", Err("host:port")),
            ("", Err("host:port")),
            ("gw.example.org:", Err("1..=65535")),
            ("gw.example.org:99999", Err("1..=65535")),
            ("gw.example.org:+1", Err("1..=65535")),
            ("gw.example.org:0", Err("port 0")),
            ("fd00::1:51820", Err("brackets")),
            ("[gw.example.org]:51820", Err("without")),
            ("[10.0.0.1]:51820", Err("without")),
            ("[fe80::1%eth0]:51820", Err("without")), // a scope is the kernel's business, not a peer's
            ("10.0.0.300:51820", Err("four numbers")),
            ("1.2.3:51820", Err("four numbers")),
            (":51820", Err("DNS name")),
            ("gw example:51820", Err("DNS name")),
            ("gw..example.org:51820", Err("DNS name")),
            ("gw/0:51820", Err("DNS name")),
            ("[[[[]]:4", Err("without")), // found by fuzzing
            ("ümlaut.example:51820", Err("DNS name")),
        ];
        for (text, want) in rows {
            match (text.parse::<Endpoint>(), want) {
                (Ok(e), Ok((host, port))) => {
                    assert_eq!((e.host(), e.port()), (*host, *port), "{text}");
                    assert_eq!(e.to_string(), *text, "prints back as written");
                }
                (Err(e), Err(fix)) => assert!(e.to_string().contains(fix), "{text:?}: {e}"),
                (got, _) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn names_are_checked_by_length() {
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join("."); // 255 characters
        assert!(format!("{}:1", &long[..253]).parse::<Endpoint>().is_ok());
        assert!(format!("{long}:1").parse::<Endpoint>().unwrap_err().to_string().contains("253"));
        assert!(format!("{}x.org:1", label).parse::<Endpoint>().is_err(), "a 64-character label");
    }

    #[test]
    fn errors_quote_an_excerpt() {
        let huge = format!("{}:1", "x/".repeat(50_000));
        let e = huge.parse::<Endpoint>().unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("more bytes"), "{}", e.len());
    }

    #[test]
    fn literals_and_localhost_resolve() {
        let v6: Endpoint = "[fd00::1]:51820".parse().unwrap();
        assert_eq!(v6.literal(), Some("[fd00::1]:51820".parse().unwrap()));
        assert_eq!(v6.resolve_now(), Ok("[fd00::1]:51820".parse().unwrap()));
        let name: Endpoint = "localhost:51820".parse().unwrap();
        assert_eq!(name.literal(), None);
        // Only the hosts file: unit tests send no DNS queries.
        assert_eq!(name.resolve_now().unwrap().port(), 51820);
    }
}
