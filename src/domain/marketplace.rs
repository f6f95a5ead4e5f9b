use serde::{Serialize, Serializer};

use super::{JobId, ThreadId, Timestamp, User, ValidationError};

/// An amount of money in cents: exact, unlike a float, and shown as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(i64);

impl Money {
    /// A billion: far above any real bid, far below where cents overflow.
    const MAX_UNITS: f64 = 1e9;

    /// # Errors
    /// Not positive, above a billion, or with more than two decimals.
    pub fn parse(field: &str, value: f64) -> Result<Self, ValidationError> {
        if !value.is_finite() || value <= 0.0 || value > Self::MAX_UNITS {
            return Err(ValidationError::new(format!("{field} must be a positive amount up to 1000000000")));
        }
        let cents = (value * 100.0).round();
        if (cents - value * 100.0).abs() > 1e-6 {
            return Err(ValidationError::new(format!("{field} must have at most two decimals")));
        }
        Ok(Self(cents as i64))
    }

    pub fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0 as f64 / 100.0)
    }
}

/// What a freelancer shows on their profile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    pub headline: String,
    pub skills: Vec<String>,
    pub hourly_rate: Option<Money>,
}

/// A freelancer's public profile (contract: User plus `headline`, `skills`, `hourly_rate`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Freelancer {
    #[serde(flatten)]
    pub user: User,
    pub headline: String,
    pub skills: Vec<String>,
    #[schema(value_type = Option<f64>)]
    pub hourly_rate: Option<Money>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Open,
    Closed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    /// The status [`Self::as_str`] names; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// A job a client posted.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    #[schema(value_type = i64)]
    pub id: JobId,
    pub title: String,
    pub description: String,
    pub client: User,
    pub status: JobStatus,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The host marketplace's id for a job it put here (server API); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// How a thread names its job: `{"id", "title"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobRef {
    #[schema(value_type = i64)]
    pub id: JobId,
    pub title: String,
}

/// A freelancer's proposal on a job, stored together with its chat thread.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Proposal {
    pub id: i64,
    #[schema(value_type = i64)]
    pub job_id: JobId,
    pub freelancer: User,
    pub cover_letter: String,
    #[schema(value_type = f64)]
    pub bid_amount: Money,
    #[schema(value_type = String, format = Uuid)]
    pub thread_id: ThreadId,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl Profile {
    pub const MAX_SKILLS: usize = 30;
    pub const MAX_SKILL_CHARS: usize = 50;

    /// Validates a profile as a client sent it; every part is optional.
    ///
    /// # Errors
    /// A headline over 200 characters, more than 30 skills, a blank or over-long
    /// skill, or a bad hourly rate.
    pub fn parse(
        headline: Option<String>,
        skills: Option<Vec<String>>,
        hourly_rate: Option<f64>,
    ) -> Result<Self, ValidationError> {
        let headline = match headline {
            Some(h) if !h.trim().is_empty() => super::ShortText::parse("headline", h)?.into_inner(),
            _ => String::new(),
        };
        let skills = skills.unwrap_or_default();
        if skills.len() > Self::MAX_SKILLS {
            return Err(ValidationError::new("at most 30 skills"));
        }
        for s in &skills {
            if s.trim().is_empty() || s.chars().count() > Self::MAX_SKILL_CHARS || s.contains('\0') {
                return Err(ValidationError::new("each skill must be 1 to 50 characters"));
            }
        }
        let hourly_rate = hourly_rate.map(|r| Money::parse("hourly_rate", r)).transpose()?;
        Ok(Self { headline, skills, hourly_rate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_cents_exactly_and_refuses_fractions_of_a_cent() {
        assert_eq!(Money::parse("bid", 500.5).map(Money::cents), Ok(50_050));
        assert_eq!(Money::parse("bid", 0.29).map(Money::cents), Ok(29));
        assert!(Money::parse("bid", 1.001).is_err());
        assert!(Money::parse("bid", 0.0).is_err());
        assert!(Money::parse("bid", -3.0).is_err());
        assert!(Money::parse("bid", f64::INFINITY).is_err());
    }

    #[test]
    fn stored_kinds_and_statuses_parse_back_and_anything_else_is_refused() {
        use crate::domain::{MessageKind, ThreadKind};
        for status in [JobStatus::Open, JobStatus::Closed] {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        for kind in [MessageKind::User, MessageKind::System] {
            assert_eq!(MessageKind::parse(kind.as_str()), Some(kind));
        }
        for kind in [ThreadKind::Direct, ThreadKind::Job, ThreadKind::Group] {
            assert_eq!(ThreadKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!((JobStatus::parse("Open"), MessageKind::parse(""), ThreadKind::parse("dm")), (None, None, None));
    }
}
