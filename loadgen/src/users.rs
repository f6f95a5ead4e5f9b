//! Registering and signing in a scenario's users over REST, a bounded number at a
//! time, with a progress line.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{Value, json};

/// A signed-in user of the run.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub id: i64,
    pub token: String,
}

/// Registers `count` users named `<prefix>-<n>` (taken names are signed in as they
/// are) and signs them in, `concurrency` at a time.
///
/// # Errors
/// A server that refuses a sign-up or sign-in for another reason than a taken name.
pub async fn sign_up(base: &str, prefix: &str, count: usize, concurrency: usize) -> anyhow::Result<Vec<SignedIn>> {
    let client = reqwest::Client::new();
    let done = Arc::new(AtomicUsize::new(0));
    let users: Vec<SignedIn> = stream::iter(0..count)
        .map(|n| {
            let (client, done) = (client.clone(), done.clone());
            let username = format!("{prefix}-{n}");
            async move {
                let user = one(&client, base, &username, n).await?;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished % 100 == 0 || finished == count {
                    eprintln!("signed in {finished}/{count} users");
                }
                anyhow::Ok(user)
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(users)
}

async fn one(client: &reqwest::Client, base: &str, username: &str, n: usize) -> anyhow::Result<SignedIn> {
    let role = if n.is_multiple_of(2) { "client" } else { "freelancer" };
    let register = json!({"username": username, "password": "loadgen-password", "full_name": username, "role": role});
    let res = client.post(format!("{base}/api/auth/register/")).json(&register).send().await.context("register")?;
    if !(res.status().is_success() || res.status().as_u16() == 409) {
        bail!("register {username}: {} {}", res.status(), res.text().await.unwrap_or_default());
    }
    let body = json!({"username": username, "password": "loadgen-password"});
    let res = client.post(format!("{base}/api/auth/token/")).json(&body).send().await.context("sign in")?;
    if !res.status().is_success() {
        bail!("sign in {username}: {} {}", res.status(), res.text().await.unwrap_or_default());
    }
    let answer: Value = res.json().await?;
    let id = answer["user"]["id"].as_i64().context("the sign-in answer has no user id")?;
    let token = answer["access"].as_str().context("the sign-in answer has no access token")?.to_owned();
    Ok(SignedIn { id, token })
}
