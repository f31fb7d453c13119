//! Linux interface names, checked once where they come in (the standalone file, the flags) so that
//! the rest of the code holds a name the kernel will take.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use kubelink_contract::excerpt;
use serde::Serialize;

/// How to write a valid name; every error ends with it.
const FIX: &str = "use 1-15 bytes without '/', ':' or whitespace, e.g. kubelink0";

/// The longest name the kernel takes (`IFNAMSIZ` less the terminating zero).
pub const MAX_LEN: usize = 15;

/// A name the kernel accepts for a link (Linux's `dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IfName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("the interface name is empty; {FIX}")]
    Empty,
    #[error("{name} is {len} bytes, too long for an interface name; {FIX}")]
    TooLong { name: String, len: usize },
    #[error("{name} contains {found:?}, which an interface name may not; {FIX}")]
    Forbidden { name: String, found: char },
    #[error("{name} names a directory, not an interface; {FIX}")]
    Dots { name: String },
}

impl FromStr for IfName {
    type Err = IfNameError;

    fn from_str(name: &str) -> Result<Self, IfNameError> {
        if name.is_empty() {
            return Err(IfNameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(IfNameError::TooLong { name: excerpt(name), len: name.len() });
        }
        // The kernel refuses these because names are also directories under /sys/class/net.
        if name == "." || name == ".." {
            return Err(IfNameError::Dots { name: excerpt(name) });
        }
        if let Some(found) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace()) {
            return Err(IfNameError::Forbidden { name: excerpt(name), found });
        }
        Ok(IfName(name.to_string()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for IfName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for IfName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<IfName> for String {
    fn from(name: IfName) -> String {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_table() {
        // rows: text, Ok(()) or a word of the reason; every error also carries the fix
        let rows: &[(&str, Result<(), &str>)] = &[
            ("kubelink0", Ok(())),
            ("a", Ok(())),
            ("fifteen-bytes15", Ok(())),
            ("wg.0-x_y", Ok(())),
            ("...", Ok(())), // only "." and ".." are directories
            ("", Err("empty")),
            ("sixteen-bytes-16", Err("16 bytes")),
            ("ääääääää", Err("16 bytes")), // bytes, not characters
            ("a/b", Err("'/'")),
            ("a:b", Err("':'")),
            ("a b", Err("' '")),
            ("a\tb", Err("'\\t'")),
            (".", Err("directory")),
            ("..", Err("directory")),
        ];
        for (text, want) in rows {
            match (text.parse::<IfName>(), want) {
                (Ok(name), Ok(())) => assert_eq!(name.to_string(), *text, "prints back as written"),
                (Err(e), Err(why)) => {
                    let e = e.to_string();
                    assert!(e.contains(why) && e.contains("1-15 bytes") && e.contains("kubelink0"), "{text:?}: {e}");
                }
                (got, _) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_long_bad_name_is_quoted_in_part() {
        let e = "x".repeat(100_000).parse::<IfName>().unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("100000 bytes"), "{}", e.len());
    }

    #[test]
    fn it_reads_as_a_str() {
        let name: IfName = "kl0".parse().unwrap();
        assert_eq!(name, "kl0");
        assert_eq!(name.len(), 3);
        assert_eq!(String::from(name.clone()), "kl0");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"kl0\"");
    }
}
