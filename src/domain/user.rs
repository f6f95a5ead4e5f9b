use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{UserId, ValidationError};

/// What a user does on the marketplace; the workflows check it (only clients hire,
/// only freelancers propose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Freelancer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Freelancer => "freelancer",
        }
    }

    /// # Errors
    /// Anything but `client` or `freelancer`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "client" => Ok(Self::Client),
            "freelancer" => Ok(Self::Freelancer),
            _ => Err(ValidationError::new("role must be \"client\" or \"freelancer\"")),
        }
    }
}

/// The public view of a user (contract: User).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    #[schema(value_type = i64)]
    pub id: UserId,
    pub username: String,
    pub full_name: String,
    pub role: Role,
    /// The host marketplace's id for a user it provisioned (host tokens, the server
    /// API). Absent (null) for someone who signed up on Confab, so a node without the
    /// integration answers exactly as before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// A user as a message names its sender and recipient (no role, as in the seed).
/// The names are shared, not copied: every message sent into a thread names the
/// same two people, from refs its members cache builds once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserRef {
    #[schema(value_type = i64)]
    pub id: UserId,
    #[schema(value_type = String)]
    pub username: Arc<str>,
    #[schema(value_type = String)]
    pub full_name: Arc<str>,
}

impl From<&User> for UserRef {
    fn from(u: &User) -> Self {
        Self { id: u.id, username: u.username.as_str().into(), full_name: u.full_name.as_str().into() }
    }
}

/// Someone a message can name: a user as read from the store, or a ref already built.
pub trait Person {
    fn id(&self) -> UserId;
    fn to_ref(&self) -> UserRef;
}

impl Person for User {
    fn id(&self) -> UserId {
        self.id
    }

    fn to_ref(&self) -> UserRef {
        UserRef::from(self)
    }
}

impl Person for UserRef {
    fn id(&self) -> UserId {
        self.id
    }

    fn to_ref(&self) -> UserRef {
        self.clone()
    }
}
