//! Ids as the original clients send them, in REST bodies and WebSocket frames
//! alike: a JSON integer, or a string of digits (what a form field or a route
//! parameter gives). For `#[serde(deserialize_with = …)]`.

use serde::{Deserialize, Deserializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    fn into_id<E: Error>(self) -> Result<i64, E> {
        match self {
            Self::Int(i) => Ok(i),
            Self::Str(s) => s.trim().parse().map_err(|_| E::custom("expected an integer id")),
        }
    }
}

/// # Errors
/// Anything but an integer or a string of one.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    IntOrString::deserialize(d)?.into_id()
}

/// The same for an optional id (`null` or absent is `None`; pair with `#[serde(default)]`).
///
/// # Errors
/// Anything but null, an integer or a string of one.
pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<IntOrString>::deserialize(d)?.map(IntOrString::into_id).transpose()
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Ids {
        #[serde(deserialize_with = "super::deserialize")]
        id: i64,
        #[serde(default, deserialize_with = "super::deserialize_option")]
        other: Option<i64>,
    }

    fn ids(json: &str) -> Result<(i64, Option<i64>), serde_json::Error> {
        serde_json::from_str::<Ids>(json).map(|i| (i.id, i.other))
    }

    #[test]
    fn an_id_is_an_integer_or_a_string_of_one() {
        assert_eq!(ids(r#"{"id": 7}"#).unwrap(), (7, None));
        assert_eq!(ids(r#"{"id": " 7 ", "other": "12"}"#).unwrap(), (7, Some(12)));
        assert_eq!(ids(r#"{"id": 7, "other": null}"#).unwrap(), (7, None));
        assert!(ids(r#"{"id": "seven"}"#).is_err());
        assert!(ids(r#"{"id": 7, "other": 1.5}"#).is_err());
    }
}
