//! Access and refresh tokens. Both are HS256 JWTs signed with the secret every node
//! shares; `token_type` keeps a long-lived refresh token from being used where a
//! short-lived access token is expected.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::domain::{Timestamp, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

/// The claims, shaped like the original system's (simplejwt: `token_type`, `user_id`).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    token_type: TokenKind,
    user_id: i64,
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is a {0:?} token, not the kind this endpoint takes")]
    WrongKind(TokenKind),
    #[error("the token is malformed or its signature is wrong")]
    Invalid,
}

/// The signing key and lifetimes, built once at start and held in the app state.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Nodes' clocks differ a little; a few seconds of grace is enough.
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// Signs a token of `kind` for `user`, valid for that kind's lifetime (or `ttl`).
    ///
    /// # Errors
    /// Only if signing fails, which HS256 with any key does not.
    pub fn issue(
        &self,
        user: UserId,
        kind: TokenKind,
        ttl: Option<Duration>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let ttl = ttl.unwrap_or(match kind {
            TokenKind::Access => self.access_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        });
        let now = Timestamp::now().millis() / 1000;
        let claims = Claims {
            token_type: kind,
            user_id: user.0,
            sub: user.0.to_string(),
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The user a token of `kind` was issued to.
    ///
    /// # Errors
    /// An expired, forged or malformed token, or one of the other kind.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<UserId, TokenError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        if data.claims.token_type != kind {
            return Err(TokenError::WrongKind(data.claims.token_type));
        }
        Ok(UserId(data.claims.user_id))
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn a_refresh_token_is_refused_where_an_access_token_is_expected() {
        let k = keys();
        let refresh = k.issue(UserId(7), TokenKind::Refresh, None).unwrap();
        assert_eq!(k.verify(&refresh, TokenKind::Access), Err(TokenError::WrongKind(TokenKind::Refresh)));
        assert_eq!(k.verify(&refresh, TokenKind::Refresh), Ok(UserId(7)));
    }

    #[test]
    fn forged_and_expired_tokens_are_refused() {
        let k = keys();
        let other = JwtKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60), Duration::from_secs(60));
        let forged = other.issue(UserId(7), TokenKind::Access, None).unwrap();
        assert_eq!(k.verify(&forged, TokenKind::Access), Err(TokenError::Invalid));
        assert_eq!(k.verify("garbage", TokenKind::Access), Err(TokenError::Invalid));
        let claims =
            Claims { token_type: TokenKind::Access, user_id: 7, sub: "7".into(), iat: 0, exp: 1, jti: "x".into() };
        let expired = encode(&Header::new(Algorithm::HS256), &claims, &k.encoding).unwrap();
        assert_eq!(k.verify(&expired, TokenKind::Access), Err(TokenError::Expired));
    }
}
