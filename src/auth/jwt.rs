//! Access and refresh tokens. Both are HS256 JWTs signed with the secret every node
//! shares, issued by and for Confab (`iss` and `aud` are checked, so a token signed
//! for another purpose with the same secret is refused); `token_type` keeps a
//! long-lived refresh token from being used where a short-lived access token is
//! expected. A refresh token names its sign-in (`fam`): the store spends each one
//! when it is used and tells a copied one by it.

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

/// How far the nodes' and clients' clocks may disagree: a token is accepted this
/// long past its `exp`, and a socket lives this long past its token's.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(5);

/// Who issues Confab's own tokens, and for whom.
const ISSUER: &str = "confab";
const AUDIENCE: &str = "confab";

/// The claims, shaped like the original system's (simplejwt: `token_type`, `user_id`).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    token_type: TokenKind,
    user_id: i64,
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// The sign-in a refresh token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fam: Option<String>,
}

/// A refresh token as signed, with what the store keeps of it.
#[derive(Debug, Clone)]
pub struct IssuedRefresh {
    pub token: String,
    pub jti: String,
    pub family: String,
    pub expires_at: Timestamp,
}

/// What a verified refresh token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshClaims {
    pub user: UserId,
    pub jti: String,
    pub family: String,
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
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
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
        self.sign(user, kind, ttl, None).map(|(token, _, _)| token)
    }

    /// Signs a refresh token of `family` (a new sign-in's when `None`).
    ///
    /// # Errors
    /// Only if signing fails, which HS256 with any key does not.
    pub fn issue_refresh(
        &self,
        user: UserId,
        family: Option<&str>,
    ) -> Result<IssuedRefresh, jsonwebtoken::errors::Error> {
        let family = family.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
        let (token, claims, expires_at) =
            self.sign(user, TokenKind::Refresh, self.refresh_ttl, Some(family.clone()))?;
        Ok(IssuedRefresh { token, jti: claims.jti, family, expires_at })
    }

    fn sign(
        &self,
        user: UserId,
        kind: TokenKind,
        ttl: Duration,
        fam: Option<String>,
    ) -> Result<(String, Claims, Timestamp), jsonwebtoken::errors::Error> {
        let now = Timestamp::now().whole_seconds();
        let expires = now.saturating_add(ttl);
        let claims = Claims {
            token_type: kind,
            user_id: user.0,
            sub: user.0.to_string(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now.secs(),
            exp: expires.secs(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            fam,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims, expires))
    }

    /// The user a token of `kind` was issued to.
    ///
    /// # Errors
    /// An expired, forged or malformed token, or one of the other kind.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<UserId, TokenError> {
        self.claims(token, kind).map(|c| UserId(c.user_id))
    }

    /// The user, token id and sign-in of a refresh token.
    ///
    /// # Errors
    /// As [`JwtKeys::verify`]; also a refresh token without a sign-in (issued before
    /// refresh tokens were single-use), which cannot be rotated.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let c = self.claims(token, TokenKind::Refresh)?;
        let family = c.fam.ok_or(TokenError::Invalid)?;
        Ok(RefreshClaims { user: UserId(c.user_id), jti: c.jti, family })
    }

    fn claims(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        if data.claims.token_type != kind {
            return Err(TokenError::WrongKind(data.claims.token_type));
        }
        Ok(data.claims)
    }

    /// When an access token expires (for the socket that lives as long as it).
    ///
    /// # Errors
    /// As [`JwtKeys::verify`]; also an `exp` no timestamp can show.
    pub fn access_expiry(&self, token: &str) -> Result<(UserId, Timestamp), TokenError> {
        let c = self.claims(token, TokenKind::Access)?;
        Ok((UserId(c.user_id), Timestamp::from_secs(c.exp).ok_or(TokenError::Invalid)?))
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
        let claims = |iss: &str, aud: &str, exp: i64| Claims {
            token_type: TokenKind::Access,
            user_id: 7,
            sub: "7".into(),
            iss: iss.into(),
            aud: aud.into(),
            iat: 0,
            exp,
            jti: "x".into(),
            fam: None,
        };
        let sign = |c: &Claims| encode(&Header::new(Algorithm::HS256), c, &k.encoding).unwrap();
        assert_eq!(k.verify(&sign(&claims(ISSUER, AUDIENCE, 1)), TokenKind::Access), Err(TokenError::Expired));
        let later = Timestamp::now().secs() + 600;
        assert_eq!(
            k.verify(&sign(&claims("someone-else", AUDIENCE, later)), TokenKind::Access),
            Err(TokenError::Invalid)
        );
        assert_eq!(k.verify(&sign(&claims(ISSUER, "another-app", later)), TokenKind::Access), Err(TokenError::Invalid));
        assert_eq!(k.verify(&sign(&claims(ISSUER, AUDIENCE, later)), TokenKind::Access), Ok(UserId(7)));
        let never = sign(&claims(ISSUER, AUDIENCE, i64::MAX));
        assert_eq!(k.access_expiry(&never), Err(TokenError::Invalid), "an exp no timestamp can show");
    }

    #[test]
    fn a_refresh_token_carries_its_sign_in() {
        let k = keys();
        let first = k.issue_refresh(UserId(7), None).unwrap();
        let next = k.issue_refresh(UserId(7), Some(&first.family)).unwrap();
        let claims = k.verify_refresh(&next.token).unwrap();
        assert_eq!((claims.user, claims.family, claims.jti), (UserId(7), first.family.clone(), next.jti.clone()));
        assert_ne!(first.jti, next.jti);
        let plain = k.issue(UserId(7), TokenKind::Refresh, None).unwrap();
        assert_eq!(k.verify_refresh(&plain), Err(TokenError::Invalid), "no sign-in: cannot be rotated");
    }
}
