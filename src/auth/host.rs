//! Tokens the host marketplace signs for its own users: HS256 with a shared
//! secret, or RS256/ES256 with its public key. Only the one configured algorithm
//! is accepted (never `none`, never HS256 over a public key), `exp` is required,
//! and `iss` is checked when an issuer is set. What the claims mean (who the user
//! is) is the chat layer's business; this only proves the host said it.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Deserializer};

use super::jwt::{CLOCK_LEEWAY, TokenError};
use crate::domain::Timestamp;

/// The claims of a host token, as verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostClaims {
    /// The host's id of the user: 1 to 128 characters.
    pub sub: String,
    /// Full name.
    pub name: String,
    /// `client` or `freelancer` (checked by the chat layer, with the name).
    pub role: String,
    #[serde(default)]
    pub username: Option<String>,
    /// When the token expires; one no timestamp can show makes the token invalid.
    #[serde(rename = "exp", deserialize_with = "unix_seconds")]
    pub expires_at: Timestamp,
}

impl HostClaims {
    pub const MAX_SUB_CHARS: usize = 128;
}

fn unix_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let secs = i64::deserialize(d)?;
    Timestamp::from_secs(secs).ok_or_else(|| serde::de::Error::custom("exp is out of range"))
}

/// How host tokens are verified, built once at start.
#[derive(Clone)]
pub struct HostKeys {
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeys").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl HostKeys {
    /// Tokens signed with a shared secret (HS256).
    pub fn hs256(secret: &[u8], issuer: Option<&str>) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256, issuer)
    }

    /// Tokens signed with the private half of a PEM public key: RS256 for an RSA
    /// key, ES256 for a P-256 key.
    ///
    /// # Errors
    /// A file that is neither.
    pub fn from_public_key_pem(pem: &[u8], issuer: Option<&str>) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256, issuer));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Self::new(key, Algorithm::ES256, issuer)),
            Err(e) => Err(format!("not an RSA or EC public key in PEM form ({e})")),
        }
    }

    fn new(decoding: DecodingKey, algorithm: Algorithm, issuer: Option<&str>) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.validate_aud = false;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self { decoding, validation }
    }

    /// The claims of a token the host signed.
    ///
    /// # Errors
    /// A token signed with another key or algorithm, expired, from another issuer,
    /// missing a claim, or with a `sub` out of range.
    pub fn verify(&self, token: &str) -> Result<HostClaims, TokenError> {
        let data = decode::<HostClaims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        let sub_chars = data.claims.sub.chars().count();
        if sub_chars == 0 || sub_chars > HostClaims::MAX_SUB_CHARS {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"host-secret-host-secret-host-secret!";

    fn sign(claims: &serde_json::Value, alg: Algorithm, key: &[u8]) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn later() -> i64 {
        Timestamp::now().secs() + 600
    }

    #[test]
    fn a_host_token_is_verified_with_its_key_algorithm_issuer_and_claims() {
        let keys = HostKeys::hs256(SECRET, Some("market"));
        let good = json!({"sub": "u-1", "name": "Ann", "role": "client", "exp": later(), "iss": "market"});
        assert_eq!(keys.verify(&sign(&good, Algorithm::HS256, SECRET)).unwrap().sub, "u-1");
        let other_key = sign(&good, Algorithm::HS256, b"another-secret-another-secret-xxxx");
        assert_eq!(keys.verify(&other_key), Err(TokenError::Invalid));
        assert_eq!(keys.verify(&sign(&good, Algorithm::HS512, SECRET)), Err(TokenError::Invalid), "another algorithm");
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("elsewhere");
        assert_eq!(keys.verify(&sign(&wrong_iss, Algorithm::HS256, SECRET)), Err(TokenError::Invalid));
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(keys.verify(&sign(&no_exp, Algorithm::HS256, SECRET)), Err(TokenError::Invalid));
        let mut never = good.clone();
        never["exp"] = json!(i64::MAX);
        assert_eq!(keys.verify(&sign(&never, Algorithm::HS256, SECRET)), Err(TokenError::Invalid), "exp out of range");
        let mut expired = good.clone();
        expired["exp"] = json!(1);
        assert_eq!(keys.verify(&sign(&expired, Algorithm::HS256, SECRET)), Err(TokenError::Expired));
        for sub in [String::new(), "x".repeat(129)] {
            let mut bad = good.clone();
            bad["sub"] = json!(sub);
            assert_eq!(keys.verify(&sign(&bad, Algorithm::HS256, SECRET)), Err(TokenError::Invalid));
        }
        let mut no_name = good;
        no_name.as_object_mut().unwrap().remove("name");
        assert_eq!(keys.verify(&sign(&no_name, Algorithm::HS256, SECRET)), Err(TokenError::Invalid));
    }

    #[test]
    fn a_public_key_that_is_neither_rsa_nor_ec_is_refused() {
        assert!(HostKeys::from_public_key_pem(b"not a key", None).is_err());
    }
}
