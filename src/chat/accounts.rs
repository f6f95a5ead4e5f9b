//! Registering and signing in, behind the limits on password guessing.

use std::net::IpAddr;
use std::time::Instant;

use super::throttle::Throttled;
use super::{Chat, Error, Result};
use crate::auth::jwt::IssuedRefresh;
use crate::auth::{HostKeys, JwtKeys, TokenError};
use crate::domain::{ErrorCode, FullName, Password, Profile, Role, Timestamp, User, UserId, Username};
use crate::store::{NewUser, RefreshToken, Rotation, StoreError};

/// A registration as a client sent it, before validation.
#[derive(Debug, Clone)]
pub struct Registration {
    pub username: String,
    pub password: String,
    pub full_name: String,
    pub role: String,
}

/// What the store keeps of a refresh token.
fn kept(user: UserId, issued: &IssuedRefresh) -> RefreshToken {
    RefreshToken { id: issued.jti.clone(), family: issued.family.clone(), user, expires_at: issued.expires_at }
}

impl From<Throttled> for Error {
    fn from(t: Throttled) -> Self {
        let secs = t.retry_after.as_secs_f64().ceil();
        Self::Limited { detail: format!("{}; try again in {secs:.0} s", t.reason), retry_after: t.retry_after }
    }
}

impl Chat {
    /// Counts a sign-in or sign-up attempt from `address`; call it before either.
    ///
    /// # Errors
    /// `rate_limited` when the address has used its attempts for now.
    pub fn admit_attempt(&self, address: IpAddr) -> Result<()> {
        Ok(self.throttle.attempt(address, Instant::now())?)
    }

    /// Creates an account.
    ///
    /// # Errors
    /// `validation_failed` for a bad field, `conflict` for a taken username.
    pub async fn register(&self, r: Registration, profile: Profile) -> Result<User> {
        let username = Username::parse(r.username)?;
        let password = Password::parse(r.password)?;
        let full_name = FullName::parse(r.full_name)?;
        let role = Role::parse(&r.role)?;
        let password_hash =
            self.hasher.hash(password.expose().to_owned()).await.map_err(|e| Error::Internal(Box::new(e)))?;
        let new = NewUser {
            username: username.as_str().to_owned(),
            password_hash,
            full_name: full_name.into_inner(),
            role,
            profile,
        };
        self.store().create_user(new).await.map_err(|e| match e {
            StoreError::Conflict(_) => {
                Error::rejected(ErrorCode::Conflict, format!("the username {:?} is taken", username.as_str()))
            }
            other => other.into(),
        })
    }

    /// The user whose username and password these are.
    ///
    /// # Errors
    /// `unauthorized` for an unknown user or a wrong password (the same answer for
    /// both); `rate_limited` while the account is delayed or locked after failures.
    pub async fn sign_in(&self, username: &str, password: String) -> Result<User> {
        let refused = || Error::rejected(ErrorCode::Unauthorized, "no account with that username and password");
        self.throttle.attempt_account(username, Instant::now())?;
        let found = self.store().credentials(username).await?;
        let (user, phc) = found.map_or((None, None), |(user, phc)| (Some(user), Some(phc)));
        // An unknown username is checked against a stand-in hash: it costs the same
        // as a wrong password, so timing does not tell which usernames exist.
        let ok = self.hasher.verify(password, phc).await.map_err(|e| Error::Internal(Box::new(e)))?;
        match user {
            Some(user) if ok => {
                self.throttle.succeeded(username);
                Ok(user)
            }
            _ => Err(refused()),
        }
    }

    /// Remembers the first refresh token of a sign-in, so it can be spent once.
    ///
    /// # Errors
    /// The store fails.
    pub async fn remember_refresh(&self, user: UserId, issued: &IssuedRefresh) -> Result<()> {
        Ok(self.store().add_refresh_token(kept(user, issued)).await?)
    }

    /// Spends refresh token `id` for `next`, of the same sign-in.
    ///
    /// # Errors
    /// `unauthorized` for a token spent already (its whole sign-in is then signed
    /// out: a copy of it is in someone else's hands) or one this server does not know.
    pub async fn rotate_refresh(&self, id: &str, user: UserId, next: &IssuedRefresh) -> Result<()> {
        let family = next.family.clone();
        match self.store().rotate_refresh_token(id, kept(user, next)).await? {
            Rotation::Rotated => Ok(()),
            Rotation::Reused => {
                tracing::warn!(
                    user = user.0,
                    family,
                    "a spent refresh token was presented again; its sign-in is revoked"
                );
                Err(Error::rejected(
                    ErrorCode::Unauthorized,
                    "this refresh token was already used; every session of this sign-in is signed out, sign in again",
                ))
            }
            Rotation::Unknown => {
                Err(Error::rejected(ErrorCode::Unauthorized, "this refresh token is not valid here; sign in again"))
            }
        }
    }

    /// The user a verified token names.
    ///
    /// # Errors
    /// `unauthorized` when the account no longer exists.
    pub async fn authenticated_user(&self, id: UserId) -> Result<User> {
        self.store()
            .user(id)
            .await?
            .ok_or_else(|| Error::rejected(ErrorCode::Unauthorized, "the token's user no longer exists"))
    }

    /// The user an access token names, and when it expires: one of Confab's own
    /// tokens, or (when `host_keys` is given) one the host marketplace signed, whose
    /// first use provisions the user. The server API key is neither, so it is
    /// refused here. REST requests and WebSocket connections both sign in here.
    ///
    /// # Errors
    /// `unauthorized` for a token neither key verifies, an expired one, or a user
    /// that no longer exists.
    pub async fn authenticate(
        &self,
        keys: &JwtKeys,
        host_keys: Option<&HostKeys>,
        token: &str,
    ) -> Result<(User, Timestamp)> {
        let refused = |e: TokenError| Error::rejected(ErrorCode::Unauthorized, e.to_string());
        let (id, expires) = match (keys.access_expiry(token), host_keys) {
            (Ok(verified), _) => verified,
            // Not one of ours: perhaps the host's.
            (Err(TokenError::Invalid), Some(host)) => {
                let claims = host.verify(token).map_err(refused)?;
                let expires = claims.expires_at;
                return Ok((self.host_user(claims).await?, expires));
            }
            (Err(e), _) => return Err(refused(e)),
        };
        Ok((self.authenticated_user(id).await?, expires))
    }
}
