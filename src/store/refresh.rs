//! Single-use refresh tokens: the SQL of their rotation (run by `sql.rs`).

/// Spends a live token; answers its family and user when it was live.
pub(super) const SPEND: &str = "UPDATE refresh_tokens SET spent = TRUE \
     WHERE id = $1 AND spent = FALSE AND expires_at > $2 RETURNING family, user_id";
/// The family of a token that was spent already (an expired, unspent one is not a
/// copy: the JWT leeway lets it through for a few seconds after its expiry).
pub(super) const FAMILY_OF: &str = "SELECT family FROM refresh_tokens WHERE id = $1 AND spent = TRUE";
/// Spends every token of a family: a copied token signs the whole sign-in out.
pub(super) const SPEND_FAMILY: &str = "UPDATE refresh_tokens SET spent = TRUE WHERE family = $1";
pub(super) const INSERT: &str = "INSERT INTO refresh_tokens (id, family, user_id, expires_at) VALUES ($1, $2, $3, $4)";
/// Tokens past their expiry can no longer be presented (their JWT has expired too).
pub(super) const FORGET_EXPIRED: &str = "DELETE FROM refresh_tokens WHERE expires_at < $1";
