//! Passwords (argon2, on a bounded pool of hashing threads) and tokens (HS256 JWT),
//! with keys and pools passed in, no global state. The HTTP extractor that uses them lives in `http`.

pub mod jwt;
pub mod password;

pub use jwt::{JwtKeys, TokenError, TokenKind};
pub use password::{HashError, Hasher};
