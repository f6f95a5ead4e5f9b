//! Passwords (argon2, on a bounded pool of hashing threads), Confab's tokens (HS256
//! JWT) and the host marketplace's (HS256, RS256 or ES256),
//! with keys and pools passed in, no global state. The HTTP extractor that uses them lives in `http`.

pub mod host;
pub mod jwt;
pub mod password;

pub use host::{HostClaims, HostKeys};
pub use jwt::{JwtKeys, TokenError, TokenKind};
pub use password::{HashError, Hasher};
