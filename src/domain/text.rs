//! Validated strings. Every text a client sends is checked here once: bounded
//! length, no NUL (PostgreSQL cannot store it, so neither store accepts it), and
//! otherwise kept verbatim: SQL or HTML in a message is data, never interpreted.

use std::fmt;

use super::ErrorCode;

/// Why a client's input was refused: `validation_failed` (or `payload_too_large`
/// for a message text over the limit) with this detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    detail: String,
    code: ErrorCode,
}

impl ValidationError {
    pub fn new(detail: impl Into<String>) -> Self {
        Self { detail: detail.into(), code: ErrorCode::ValidationFailed }
    }

    /// Input that is well-formed but larger than the server takes.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self { detail: detail.into(), code: ErrorCode::PayloadTooLarge }
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ValidationError {}

/// Checks a free text: not blank, at most `max` characters, no NUL.
fn checked(field: &str, s: String, max: usize) -> Result<String, ValidationError> {
    if s.trim().is_empty() {
        return Err(ValidationError::new(format!("{field} must not be empty")));
    }
    if s.contains('\0') {
        return Err(ValidationError::new(format!("{field} must not contain NUL characters")));
    }
    let chars = s.chars().count();
    if chars > max {
        return Err(ValidationError::new(format!("{field} is {chars} characters; the limit is {max}")));
    }
    Ok(s)
}

/// A login name: Django's rules (letters, digits and `@.+-_`, at most 150), so
/// every account of the original system fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MAX_CHARS: usize = 150;

    /// # Errors
    /// Empty, too long, or characters outside letters, digits and `@.+-_`.
    pub fn parse(s: String) -> Result<Self, ValidationError> {
        let ok_char = |c: char| c.is_alphanumeric() || "@.+-_".contains(c);
        if s.is_empty() || s.chars().count() > Self::MAX_CHARS || !s.chars().all(ok_char) {
            return Err(ValidationError::new("username must be 1 to 150 letters, digits or @.+-_ characters"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: long enough to resist guessing, short enough that hashing
/// it cannot be used to burn CPU.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// # Errors
    /// Fewer than 8 or more than 128 characters.
    pub fn parse(s: String) -> Result<Self, ValidationError> {
        let n = s.chars().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&n) {
            return Err(ValidationError::new("password must be 8 to 128 characters"));
        }
        Ok(Self(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A person's display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub const MAX_CHARS: usize = 150;

    /// # Errors
    /// Blank, over 150 characters, or containing NUL.
    pub fn parse(s: String) -> Result<Self, ValidationError> {
        checked("full_name", s, Self::MAX_CHARS).map(Self)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A title or headline: one line of at most 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortText(String);

impl ShortText {
    pub const MAX_CHARS: usize = 200;

    /// # Errors
    /// Blank, over 200 characters, or containing NUL.
    pub fn parse(field: &str, s: String) -> Result<Self, ValidationError> {
        checked(field, s, Self::MAX_CHARS).map(Self)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A description or cover letter: at most 10,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongText(String);

impl LongText {
    pub const MAX_CHARS: usize = 10_000;

    /// # Errors
    /// Blank, over 10,000 characters, or containing NUL.
    pub fn parse(field: &str, s: String) -> Result<Self, ValidationError> {
        checked(field, s, Self::MAX_CHARS).map(Self)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A chat message's text; its limit is a setting (default 4,000 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// # Errors
    /// `payload_too_large` over `max_chars` characters; blank or containing NUL.
    pub fn parse(s: String, max_chars: usize) -> Result<Self, ValidationError> {
        // Bytes bound characters from above: most texts skip the count.
        if s.len() > max_chars {
            let chars = s.chars().count();
            if chars > max_chars {
                return Err(ValidationError::too_large(format!(
                    "text is {chars} characters; the limit is {max_chars}"
                )));
            }
        }
        checked("text", s, max_chars).map(Self)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_is_kept_verbatim_but_bounded() {
        let html = "<script>alert('x')</script>'; DROP TABLE messages; --".to_owned();
        assert_eq!(MessageText::parse(html.clone(), 4000).map(MessageText::into_inner), Ok(html));
        assert!(MessageText::parse("   \n".to_owned(), 4000).is_err());
        let long = MessageText::parse("é".repeat(11), 10).unwrap_err();
        assert_eq!(long.code(), ErrorCode::PayloadTooLarge);
        assert!(MessageText::parse("é".repeat(10), 10).is_ok());
        assert!(MessageText::parse("a\0b".to_owned(), 10).is_err());
    }

    #[test]
    fn usernames_follow_djangos_rules() {
        assert!(Username::parse("test.client+1@x".to_owned()).is_ok());
        assert!(Username::parse("has space".to_owned()).is_err());
        assert!(Username::parse(String::new()).is_err());
        assert!(Username::parse("a".repeat(151)).is_err());
    }
}
