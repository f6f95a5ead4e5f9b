use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with millisecond precision: stored as milliseconds since the epoch
/// in every backend (so both stores agree to the millisecond), shown as RFC 3339
/// with a `Z`. Always an instant that can be shown (years ±262,000): a number out
/// of that range is refused where it enters (a row, a token), never shown as another time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(3))
    }

    /// The instant `ms` milliseconds after the epoch; `None` beyond the years ±262,000.
    pub fn from_millis(ms: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(ms).map(Self)
    }

    /// The instant `secs` seconds after the epoch (a JWT's `exp`); `None` out of range.
    pub fn from_secs(secs: i64) -> Option<Self> {
        DateTime::from_timestamp(secs, 0).map(Self)
    }

    /// This instant without its fraction of a second (a JWT's `iat` and `exp` are whole).
    pub fn whole_seconds(self) -> Self {
        Self(self.0.trunc_subsecs(0))
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn secs(self) -> i64 {
        self.0.timestamp()
    }

    /// `d` later; a time past the last instant there is (a lifetime of "forever")
    /// stops there.
    pub fn saturating_add(self, d: Duration) -> Self {
        let later = TimeDelta::from_std(d).ok().and_then(|d| self.0.checked_add_signed(d));
        Self(later.unwrap_or(DateTime::<Utc>::MAX_UTC).trunc_subsecs(3))
    }

    /// `d` earlier; before the first instant there is, that instant.
    pub fn saturating_sub(self, d: Duration) -> Self {
        let earlier = TimeDelta::from_std(d).ok().and_then(|d| self.0.checked_sub_signed(d));
        Self(earlier.unwrap_or(DateTime::<Utc>::MIN_UTC).trunc_subsecs(3))
    }

    pub fn to_rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Appends what [`Self::to_rfc3339`] returns (and `Serialize` writes), without
    /// a `String` of its own: for JSON written by hand (`ws::json`).
    pub fn push_rfc3339(self, out: &mut String) {
        match self.rfc3339_fast().as_ref().map(|text| std::str::from_utf8(text)) {
            Some(Ok(text)) => out.push_str(text),
            _ => out.push_str(&self.to_rfc3339()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339_fast() {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?),
            None => s.serialize_str(&self.to_rfc3339()),
        }
    }
}

impl Timestamp {
    /// What [`Self::to_rfc3339`] writes, without its `String`, for the years 0 to
    /// 9999 (every message's timestamp, written into every frame); `None` for the
    /// rest (a sign, more digits) and for a leap second, which chrono writes itself.
    fn rfc3339_fast(self) -> Option<[u8; 24]> {
        use chrono::{Datelike, Timelike};
        // The fields of the UTC time as stored: each one asked of the `DateTime`
        // adds the (zero) offset again, most of this function's instructions.
        let t = self.0.naive_utc();
        let (year, nanos) = (t.year(), t.nanosecond());
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year.unsigned_abs());
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 3, nanos / 1_000_000);
        Some(out)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Self(t.with_timezone(&Utc).trunc_subsecs(3)))
            .map_err(|e| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_z_and_millis() {
        let t = Timestamp::from_millis(1_785_058_200_123).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-07-26T09:30:00.123Z");
        assert_eq!(serde_json::from_value::<Timestamp>(serde_json::to_value(t).unwrap()).unwrap(), t);
    }

    #[test]
    fn the_fast_rfc3339_is_what_chrono_writes() {
        let shown = |t: Timestamp| serde_json::to_value(t).unwrap().as_str().unwrap().to_owned();
        let edges =
            [0, 1, 999, 1_000, 951_782_400_000, 1_785_058_200_123, 253_402_300_799_999, -1, -62_167_219_200_000];
        // Spread over years 0 to 9999, and a step past each end (chrono's own path).
        let spread = (-50..20_050).map(|i: i64| -62_167_219_200_000 + i * 15_778_476_543);
        for ms in edges.into_iter().chain(spread) {
            let t = Timestamp::from_millis(ms).unwrap();
            assert_eq!(shown(t), t.to_rfc3339(), "{ms}");
        }
        assert!(Timestamp::from_millis(253_402_300_800_000).unwrap().rfc3339_fast().is_none());
        assert!(Timestamp::from_millis(-62_167_219_200_001).unwrap().rfc3339_fast().is_none());
        let leap: Timestamp = serde_json::from_str(r#""2016-12-31T23:59:60.500Z""#).unwrap();
        assert_eq!(shown(leap), leap.to_rfc3339());
    }

    #[test]
    fn a_time_rfc3339_cannot_show_is_refused_not_shown_as_another() {
        assert_eq!(Timestamp::from_millis(i64::MAX), None);
        assert_eq!(Timestamp::from_secs(i64::MIN), None);
        let far = Timestamp::now().saturating_add(Duration::from_secs(u64::MAX));
        assert!(far > Timestamp::now() && far.to_rfc3339().starts_with('+'), "{}", far.to_rfc3339());
        assert_eq!(Timestamp::from_secs(far.secs()).map(|t| t.secs()), Some(far.secs()));
    }
}
