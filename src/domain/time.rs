use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A UTC instant with millisecond precision: stored as milliseconds since the epoch
/// in every backend (so both stores agree to the millisecond), shown as RFC 3339
/// with a `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_z_and_millis() {
        assert_eq!(Timestamp::from_millis(1_785_058_200_123).to_rfc3339(), "2026-07-26T09:30:00.123Z");
    }
}
