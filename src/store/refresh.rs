//! Single-use refresh tokens, written once for both stores: the SQL is the same,
//! and the code differs only in sqlx's database type, so a macro stamps it out
//! for each (a generic function over `sqlx::Database` would need a bound for every
//! type bound and executor used, longer than the code itself).

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

macro_rules! refresh_token_ops {
    ($db:ty) => {
        async fn insert(tx: &mut sqlx::Transaction<'_, $db>, token: &RefreshToken) -> Result<()> {
            sqlx::query(super::INSERT)
                .bind(&token.id)
                .bind(&token.family)
                .bind(token.user.0)
                .bind(token.expires_at.millis())
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        pub(in crate::store) async fn add(
            pool: &sqlx::Pool<$db>,
            begin: &'static str,
            token: RefreshToken,
        ) -> Result<()> {
            let mut tx = pool.begin_with(begin).await?;
            sqlx::query(super::FORGET_EXPIRED).bind(Timestamp::now().millis()).execute(&mut *tx).await?;
            insert(&mut tx, &token).await?;
            tx.commit().await?;
            Ok(())
        }

        pub(in crate::store) async fn rotate(
            pool: &sqlx::Pool<$db>,
            begin: &'static str,
            id: &str,
            next: RefreshToken,
        ) -> Result<Rotation> {
            let mut tx = pool.begin_with(begin).await?;
            let live: Option<(String, i64)> =
                sqlx::query_as(super::SPEND).bind(id).bind(Timestamp::now().millis()).fetch_optional(&mut *tx).await?;
            let rotation = match live {
                Some((family, user)) if family == next.family && user == next.user.0 => {
                    insert(&mut tx, &next).await?;
                    Rotation::Rotated
                }
                // Signed by us but not of this family: nothing to rotate (and the
                // transaction, with its spend, is dropped).
                Some(_) => return Ok(Rotation::Unknown),
                None => {
                    let family: Option<String> =
                        sqlx::query_scalar(super::FAMILY_OF).bind(id).fetch_optional(&mut *tx).await?;
                    let Some(family) = family else { return Ok(Rotation::Unknown) };
                    sqlx::query(super::SPEND_FAMILY).bind(&family).execute(&mut *tx).await?;
                    Rotation::Reused
                }
            };
            tx.commit().await?;
            Ok(rotation)
        }
    };
}

pub(super) mod sqlite {
    use super::super::{RefreshToken, Result, Rotation};
    use crate::domain::Timestamp;
    refresh_token_ops!(sqlx::Sqlite);
}

pub(super) mod postgres {
    use super::super::{RefreshToken, Result, Rotation};
    use crate::domain::Timestamp;
    refresh_token_ops!(sqlx::Postgres);
}
