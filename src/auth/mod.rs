//! Passwords (argon2) and tokens (HS256 JWT): pure functions with keys passed in,
//! no global state. The HTTP extractor that uses them lives in `http`.

pub mod jwt;
pub mod password;

pub use jwt::{JwtKeys, TokenError, TokenKind};
