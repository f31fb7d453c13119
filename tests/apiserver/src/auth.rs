//! Bearer-token authentication: one admin token and ServiceAccount tokens from the TokenRequest API.
//!
//! Tokens are opaque random strings, not signed JWTs: only this server needs to read them.

use std::collections::HashMap;
use std::sync::Mutex;

use super::rbac::User;
use super::status::ApiError;

/// The admin's user and group; `system:masters` bypasses authorization as in Kubernetes.
pub const ADMIN_USER: &str = "system:admin";
/// Who a request is with authentication off (the old insecure port's user), for the request log.
pub const UNSECURED_USER: &str = "system:unsecured";
/// Who a request without an `Authorization` header is, as with the real server's anonymous auth.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// The shortest lifetime the real TokenRequest API accepts.
pub const MIN_TOKEN_SECONDS: i64 = 600;
/// What a TokenRequest without `spec.expirationSeconds` gets.
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;

#[derive(Debug, Clone)]
struct Token {
    user: User,
    /// `(namespace, name)` of the ServiceAccount: its token dies with it, as a bound token does.
    service_account: Option<(String, String)>,
    expires: Option<jiff::Timestamp>,
}

/// The issued tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Mutex<HashMap<String, Token>>,
}

/// 32 random bytes, hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user a ServiceAccount token authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> User {
    User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

/// A bound token request ends at `now + seconds`.
pub fn expiry(seconds: i64) -> Result<jiff::Timestamp, ApiError> {
    let span = jiff::SignedDuration::from_secs(seconds);
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .and_then(|t| t.checked_add(span))
        .map_err(|e| ApiError::bad_request(format!("spec.expirationSeconds: {e}")))
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new token for the admin (`system:masters`), never expiring.
    pub fn issue_admin(&self) -> String {
        let user = User::new(ADMIN_USER, &["system:masters", "system:authenticated"]);
        self.insert(Token { user, service_account: None, expires: None })
    }

    /// A new token for a ServiceAccount (whose existence the caller checked).
    pub fn issue_service_account(&self, namespace: &str, name: &str, expires: jiff::Timestamp) -> String {
        let user = service_account_user(namespace, name);
        let service_account = Some((namespace.to_string(), name.to_string()));
        self.insert(Token { user, service_account, expires: Some(expires) })
    }

    fn insert(&self, token: Token) -> String {
        let secret = random_token();
        self.lock().insert(secret.clone(), token);
        secret
    }

    /// The user of a valid token; `sa_exists` says whether a ServiceAccount is still there.
    pub fn user_of(&self, token: &str, sa_exists: impl Fn(&str, &str) -> bool) -> Option<User> {
        let token = self.lock().get(token).cloned()?;
        if token.expires.is_some_and(|e| e <= jiff::Timestamp::now()) {
            return None;
        }
        if let Some((ns, name)) = &token.service_account
            && !sa_exists(ns, name)
        {
            return None;
        }
        Some(token.user)
    }
}

/// The user of a request, from its `Authorization` header; `Err` is the real server's 401.
pub fn authenticate(
    tokens: &Tokens,
    authorization: Option<&str>,
    sa_exists: impl Fn(&str, &str) -> bool,
) -> Result<User, ApiError> {
    let Some(header) = authorization else {
        return Ok(User::new(ANONYMOUS_USER, &["system:unauthenticated"]));
    };
    let token = header.strip_prefix("Bearer ").map(str::trim).ok_or_else(ApiError::unauthorized)?;
    tokens.user_of(token, sa_exists).ok_or_else(ApiError::unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_their_service_account_is_gone() {
        let tokens = Tokens::default();
        let admin = tokens.issue_admin();
        let sa = tokens.issue_service_account("kubelink", "agent", expiry(3600).unwrap());
        let user = authenticate(&tokens, Some(&format!("Bearer {admin}")), |_, _| true).unwrap();
        assert_eq!(user.name, ADMIN_USER);
        let user = authenticate(&tokens, Some(&format!("Bearer {sa}")), |_, _| true).unwrap();
        assert_eq!(user, service_account_user("kubelink", "agent"));
        assert_eq!(authenticate(&tokens, Some(&format!("Bearer {sa}")), |_, _| false), Err(ApiError::unauthorized()));
        assert_eq!(authenticate(&tokens, Some("Bearer nope"), |_, _| true), Err(ApiError::unauthorized()));
        assert_eq!(authenticate(&tokens, None, |_, _| true).unwrap().name, ANONYMOUS_USER);
        let expired = tokens.issue_service_account("kubelink", "agent", jiff::Timestamp::UNIX_EPOCH);
        assert!(authenticate(&tokens, Some(&format!("Bearer {expired}")), |_, _| true).is_err());
    }
}
