//! The demo marketplace: the original system's test accounts (`testclient`,
//! `testfreelancer`, password `testpass123`), more freelancers with profiles, and
//! open jobs. Loading adds only what is missing, so it is safe to run again.

use std::collections::HashSet;

use crate::chat::{Chat, Error, Registration};
use crate::domain::{ErrorCode, PageRequest, Profile, User, UserId};
use crate::store::NewJob;

/// The password of every demo account.
pub const PASSWORD: &str = "testpass123";

struct DemoUser {
    username: &'static str,
    full_name: &'static str,
    role: &'static str,
    headline: &'static str,
    skills: &'static [&'static str],
    hourly_rate: Option<f64>,
}

const USERS: &[DemoUser] = &[
    DemoUser {
        username: "testclient",
        full_name: "Test Client",
        role: "client",
        headline: "",
        skills: &[],
        hourly_rate: None,
    },
    DemoUser {
        username: "testfreelancer",
        full_name: "Test Freelancer",
        role: "freelancer",
        headline: "Full-stack developer: React, Django and Rust",
        skills: &["React", "Django", "Rust", "PostgreSQL"],
        hourly_rate: Some(65.0),
    },
    DemoUser {
        username: "alice",
        full_name: "Alice Smith",
        role: "freelancer",
        headline: "Product designer for marketplaces and SaaS",
        skills: &["Figma", "UX research", "Design systems"],
        hourly_rate: Some(80.0),
    },
    DemoUser {
        username: "bob",
        full_name: "Bob Johnson",
        role: "freelancer",
        headline: "Mobile engineer (iOS and Android)",
        skills: &["Swift", "Kotlin", "React Native"],
        hourly_rate: Some(72.5),
    },
    DemoUser {
        username: "carmen",
        full_name: "Carmen Diaz",
        role: "freelancer",
        headline: "Copywriter and content strategist",
        skills: &["Copywriting", "SEO", "Content strategy"],
        hourly_rate: Some(45.0),
    },
    DemoUser {
        username: "dmitri",
        full_name: "Dmitri Petrov",
        role: "freelancer",
        headline: "DevOps and cloud infrastructure",
        skills: &["Kubernetes", "Terraform", "AWS", "Linux"],
        hourly_rate: Some(95.0),
    },
    DemoUser {
        username: "erin",
        full_name: "Erin Walsh",
        role: "client",
        headline: "",
        skills: &[],
        hourly_rate: None,
    },
];

/// (client username, title, description)
const JOBS: &[(&str, &str, &str)] = &[
    (
        "testclient",
        "Build a React landing page",
        "A responsive landing page for our marketplace launch, with a signup form.",
    ),
    ("testclient", "Logo and brand kit", "A logo, a colour palette and a one-page brand guide for a new startup."),
    ("testclient", "Set up CI for a Django app", "GitHub Actions: tests, linting and deploys to a staging server."),
    ("erin", "iOS app for a bakery", "Ordering and pickup times, with push notifications when an order is ready."),
    ("erin", "Blog posts about remote work", "Four 1,500-word posts a month, researched and SEO-friendly."),
];

/// What loading added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub users: usize,
    pub jobs: usize,
}

/// Adds the demo users and jobs that are missing.
///
/// # Errors
/// A store error.
pub async fn load(chat: &Chat) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    for u in USERS {
        let profile = Profile::parse(
            Some(u.headline.to_owned()),
            Some(u.skills.iter().map(|s| (*s).to_owned()).collect()),
            u.hourly_rate,
        )?;
        let registration = Registration {
            username: u.username.to_owned(),
            password: PASSWORD.to_owned(),
            full_name: u.full_name.to_owned(),
            role: u.role.to_owned(),
        };
        match chat.register(registration, profile).await {
            Ok(_) => loaded.users += 1,
            Err(Error::Rejected { code: ErrorCode::Conflict, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let existing = existing_jobs(chat).await?;
    for (client, title, description) in JOBS {
        let client = user(chat, client).await?;
        if !existing.contains(&(client.id, (*title).to_owned())) {
            let new = NewJob { client: client.id, title: (*title).to_owned(), description: (*description).to_owned() };
            chat.store().create_job(new).await?;
            loaded.jobs += 1;
        }
    }
    Ok(loaded)
}

/// The (client, title) of every job, so loading the demo twice adds nothing. A
/// walk over all jobs: the demo runs on a database of demo size.
async fn existing_jobs(chat: &Chat) -> Result<HashSet<(UserId, String)>, Error> {
    let mut seen = HashSet::new();
    let mut page = PageRequest { limit: PageRequest::MAX_LIMIT, offset: 0 };
    loop {
        let jobs = chat.store().jobs(page).await?;
        seen.extend(jobs.results.into_iter().map(|j| (j.client.id, j.title)));
        if !jobs.has_more {
            return Ok(seen);
        }
        page.offset += u64::from(page.limit);
    }
}

async fn user(chat: &Chat, username: &str) -> Result<User, Error> {
    // Registered just before (or already there): its absence is a fault.
    let user = chat.store().user_by_username(username).await?;
    user.ok_or_else(|| Error::Internal(format!("the demo user {username} is gone").into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_rates_are_valid_money() {
        for u in super::USERS {
            if let Some(r) = u.hourly_rate {
                assert!(crate::domain::Money::parse("rate", r).is_ok());
            }
        }
    }
}
