//! Registering and signing in, behind the limits on password guessing.

use std::net::IpAddr;
use std::time::Instant;

use super::throttle::Throttled;
use super::{Chat, Error, Result};
use crate::domain::{ErrorCode, FullName, Password, Profile, Role, User, UserId, Username};
use crate::store::{NewUser, StoreError};

/// A registration as a client sent it, before validation.
#[derive(Debug, Clone)]
pub struct Registration {
    pub username: String,
    pub password: String,
    pub full_name: String,
    pub role: String,
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
        self.throttle.check_account(username, Instant::now())?;
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
            _ => {
                self.throttle.failed(username, Instant::now());
                Err(refused())
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
}
