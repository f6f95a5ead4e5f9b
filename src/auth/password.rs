//! Argon2id with the crate's defaults (OWASP's recommended parameters). Hashing
//! takes tens of milliseconds of CPU on purpose, so callers run it on a blocking
//! thread, never on the async runtime.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashes a password into a self-describing PHC string.
///
/// # Errors
/// Only if the hasher rejects its own parameters, which the defaults never do.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Whether `password` matches `phc`; a malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let h = super::hash("testpass123").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("testpass123", &h));
        assert!(!super::verify("testpass124", &h));
        assert!(!super::verify("testpass123", "not a hash"));
    }
}
