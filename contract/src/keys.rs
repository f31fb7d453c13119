//! WireGuard keys: x25519 key pairs in WireGuard's text form (standard base64 of 32 bytes).
//!
//! A [`PrivateKey`] never shows its value in `Debug` or `Display`; the only way to the text form is
//! [`PrivateKey::expose_base64`], which names what it does at every call site.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::Zeroizing;

/// A key given in text form that is not a WireGuard key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "not valid base64 ({0}); a WireGuard key is 44 characters of standard base64, e.g. from `kubelink keys genkey`"
    )]
    Base64(String),
    #[error("decodes to {0} bytes, a WireGuard key has 32; generate one with `kubelink keys genkey`")]
    Length(usize),
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|e| KeyError::Base64(e.to_string()))?);
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// An x25519 private key. Zeroed on drop, redacted in `Debug`/`Display`.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(StaticSecret::random())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(DalekPublic::from(&self.0).to_bytes())
    }

    /// The raw bytes, for handing to a WireGuard engine.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The WireGuard text form. Only for writing key files and Secrets, never for logs.
    pub fn expose_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.to_bytes()))
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self::from_bytes)
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        // Comparing public keys avoids a timing-dependent comparison of secrets.
        self.public_key() == other.public_key()
    }
}
impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<redacted>, public {})", self.public_key())
    }
}

impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An x25519 public key; `Display` gives the WireGuard text form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known pair from `wg genkey | tee k | wg pubkey` semantics: clamping is applied by x25519.
    const PRIV: &str = "YGnDgU5Ojh3HqRzZjVZ0Iv1mvdQ2p1JmS8mXQmoxY3s=";

    #[test]
    fn round_trips_text_form() {
        let k: PrivateKey = PRIV.parse().unwrap();
        assert_eq!(k.expose_base64().as_str(), PRIV);
        let p = k.public_key();
        assert_eq!(p.to_base64().parse::<PublicKey>().unwrap(), p);
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let k: PrivateKey = PRIV.parse().unwrap();
        let shown = format!("{k:?} {k} {k:#?}");
        assert!(!shown.contains(PRIV), "{shown}");
        assert!(!shown.contains(&PRIV[..20]), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn rejects_malformed_keys_with_a_reason() {
        // rows: input, why it is wrong
        let cases = [
            ("", KeyError::Length(0)),
            ("AAAA", KeyError::Length(3)),
            ("not base64 at all!", KeyError::Base64(String::new())),
        ];
        for (input, want) in cases {
            let got = input.parse::<PublicKey>().unwrap_err();
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&want), "{input:?} gave {got}");
            assert!(got.to_string().contains("kubelink keys genkey"));
        }
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(PrivateKey::generate(), PrivateKey::generate());
    }
}
