//! The host marketplace's side: its users arrive by signed token or by the server
//! API and are provisioned by their id there (`external_id`); its backend upserts
//! jobs, posts system messages, and reads back the events it was sent.

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::committer::{Job, SystemJob};
use super::{Chat, Error, Result, Sent};
use crate::auth::HostClaims;
use crate::domain::{
    ClientMsgId, Cursor, ErrorCode, FullName, JobStatus, LongText, Message, MessageText, Page, Role, Seq, ShortText,
    Thread, ThreadId, User, Username,
};
use crate::store::{EventKind, ExternalJob, ExternalUser, NewSystemMessage, StoreError, StoredEvent};

/// The largest `metadata` of a host's system message, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A user as the host describes them, before validation.
#[derive(Debug, Clone)]
pub struct HostUser {
    pub external_id: String,
    pub full_name: String,
    pub role: String,
    pub username: Option<String>,
}

/// A job as the host describes it, before validation.
#[derive(Debug, Clone)]
pub struct HostJob {
    pub external_id: String,
    pub title: String,
    pub description: Option<String>,
    pub client_external_id: String,
    pub status: Option<String>,
}

impl HostUser {
    fn validate(self) -> std::result::Result<ExternalUser, crate::domain::ValidationError> {
        let chars = self.external_id.chars().count();
        if chars == 0 || chars > HostClaims::MAX_SUB_CHARS || self.external_id.contains('\0') {
            return Err(crate::domain::ValidationError::new("external_id must be 1 to 128 characters"));
        }
        Ok(ExternalUser {
            username: self.username.map(|u| Username::parse(u).map(|u| u.as_str().to_owned())).transpose()?,
            full_name: FullName::parse(self.full_name)?.into_inner(),
            role: Role::parse(&self.role)?,
            external_id: self.external_id,
        })
    }
}

impl Chat {
    /// The user a verified host token names, provisioned on first use and kept in
    /// step with the token's name and role.
    ///
    /// # Errors
    /// `unauthorized` for claims that do not make a user (a bad name or role).
    pub async fn host_user(&self, claims: HostClaims) -> Result<User> {
        let wanted =
            HostUser { external_id: claims.sub, full_name: claims.name, role: claims.role, username: claims.username }
                .validate()
                .map_err(|e| Error::rejected(ErrorCode::Unauthorized, format!("the host token's claims: {e}")))?;
        match self.store().user_by_external_id(&wanted.external_id).await? {
            Some(user) if user.full_name == wanted.full_name && user.role == wanted.role => Ok(user),
            // A token updates name and role; its username counts only at creation.
            Some(_) => Ok(self.provision(ExternalUser { username: None, ..wanted }, false).await?.0),
            // A token's username is a wish: if someone else has it, the user still gets in.
            None => Ok(self.provision(wanted, false).await?.0),
        }
    }

    /// `PUT /api/server/users/{external_id}/`: creates or updates the host's user.
    ///
    /// # Errors
    /// `validation_failed` for a bad field; `conflict` for a username someone else has.
    pub async fn upsert_host_user(&self, user: HostUser) -> Result<(User, bool)> {
        self.provision(user.validate()?, true).await
    }

    async fn provision(&self, user: ExternalUser, username_is_required: bool) -> Result<(User, bool)> {
        let provisioned = self.upsert_with_fallback(user, username_is_required).await?;
        if !provisioned.1 {
            self.members.forget_user(provisioned.0.id);
        }
        Ok(provisioned)
    }

    async fn upsert_with_fallback(&self, user: ExternalUser, username_is_required: bool) -> Result<(User, bool)> {
        let fallback = ExternalUser { username: None, ..user.clone() };
        match self.store().upsert_external_user(user).await {
            Err(StoreError::Conflict(_)) if username_is_required => {
                Err(Error::rejected(ErrorCode::Conflict, "this username belongs to another user"))
            }
            // The username (or, for a new user without one, their external id) is
            // taken: keep the user's own, or make a unique one from the id.
            Err(StoreError::Conflict(_)) => match self.store().upsert_external_user(fallback.clone()).await {
                Err(StoreError::Conflict(_)) => {
                    let unique =
                        format!("{}-{}", fallback.external_id, &uuid::Uuid::new_v4().simple().to_string()[..8]);
                    let username = Username::parse(unique).ok().map(|u| u.as_str().to_owned());
                    let username = username.or_else(|| Some(format!("host-{}", uuid::Uuid::new_v4().simple())));
                    Ok(self.store().upsert_external_user(ExternalUser { username, ..fallback }).await?)
                }
                other => Ok(other?),
            },
            other => Ok(other?),
        }
    }

    /// `PUT /api/server/jobs/{external_id}/`: creates or updates the host's job.
    ///
    /// # Errors
    /// `validation_failed` for a bad field or a client who is not a client;
    /// `not_found` for an unknown client.
    pub async fn upsert_host_job(&self, job: HostJob) -> Result<(crate::domain::Job, bool)> {
        let chars = job.external_id.chars().count();
        if chars == 0 || chars > HostClaims::MAX_SUB_CHARS {
            return Err(Error::validation("external_id must be 1 to 128 characters"));
        }
        let title = ShortText::parse("title", job.title)?.into_inner();
        let description = match job.description {
            Some(d) if !d.trim().is_empty() => LongText::parse("description", d)?.into_inner(),
            _ => String::new(),
        };
        let status = match job.status.as_deref() {
            None => JobStatus::Open,
            Some(s) => JobStatus::parse(s).ok_or_else(|| Error::validation("status must be \"open\" or \"closed\""))?,
        };
        let client = self
            .store()
            .user_by_external_id(&job.client_external_id)
            .await?
            .ok_or_else(|| Error::not_found("client (no user has this client_external_id)"))?;
        if client.role != Role::Client {
            return Err(Error::validation("client_external_id names a user who is not a client"));
        }
        let new = ExternalJob { external_id: job.external_id, client: client.id, title, description, status };
        Ok(self.store().upsert_external_job(new).await?)
    }

    /// `POST /api/server/threads/{id}/messages/`: a system message from the host,
    /// delivered live to everyone in the thread.
    ///
    /// # Errors
    /// `validation_failed` for bad text, metadata or key; `not_found` for an unknown
    /// thread; `conflict` for a key already used with another text.
    pub async fn post_host_message(
        &self,
        thread_id: ThreadId,
        text: String,
        metadata: Option<Value>,
        client_msg_id: Option<String>,
    ) -> Result<Sent> {
        let text = MessageText::parse(text, self.limits.max_text_chars)?.into_inner();
        let metadata = metadata.unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(Error::validation("metadata must be a JSON object"));
        }
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(Error::validation("metadata must be at most 16 KiB of JSON"));
        }
        let client_msg_id = client_msg_id.as_deref().map(ClientMsgId::parse).transpose()?;
        let new = NewSystemMessage { thread_id, text, metadata, client_msg_id };
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::System(Box::new(SystemJob { new, reply }))).await?;
        answer.await.map_err(|_| Error::rejected(ErrorCode::Unavailable, "the server is shutting down; send again"))?
    }

    /// Recorded events after `after`, rendered as the webhooks send them.
    ///
    /// # Errors
    /// A store that fails.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Page<Value>> {
        let page = self.store().events_after(after, limit).await?;
        let mut results = Vec::with_capacity(page.results.len());
        // A run of one thread's events is rendered with two reads, as the webhooks do.
        for run in page.results.chunk_by(|a, b| a.thread_id == b.thread_id) {
            results.extend(self.render_thread_events(run).await?);
        }
        Ok(Page { results, has_more: page.has_more })
    }

    /// The contract's event JSON: `{"id","seq","type","created_at","data"}`, read
    /// from the store now (a message is as it is, `is_read` as of now).
    ///
    /// # Errors
    /// A store that fails, or an event whose thread or message is gone.
    pub async fn render_event(&self, event: &StoredEvent) -> Result<Value> {
        let mut rendered = self.render_thread_events(std::slice::from_ref(event)).await?;
        rendered.pop().ok_or_else(|| missing(event))
    }

    /// Renders events of one thread with two reads whatever their number: its
    /// participants, and the messages the events name (one page from the lowest
    /// seq to the highest). Rendering each on its own took two reads per event,
    /// which bounded how fast webhooks went out.
    ///
    /// # Errors
    /// As [`Chat::render_event`]; also events of more than one thread.
    pub async fn render_thread_events(&self, events: &[StoredEvent]) -> Result<Vec<Value>> {
        let Some(first) = events.first() else { return Ok(Vec::new()) };
        let thread = first.thread_id;
        if events.iter().any(|e| e.thread_id != thread) {
            return Err(Error::Internal("events of several threads rendered together".into()));
        }
        let store = self.store();
        let participants = store.participants(thread).await?;
        let seqs = events.iter().filter(|e| e.kind == EventKind::MessageCreated).filter_map(|e| e.thread_seq);
        let (low, high) = seqs.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s.0), hi.max(s.0)));
        let mut messages = std::collections::HashMap::new();
        if low <= high {
            let span = u32::try_from(high - low + 1).unwrap_or(u32::MAX);
            let page = store.messages(thread, Cursor::Between(Seq(low - 1), Seq(high + 1)), span).await?;
            messages.extend(page.results.into_iter().map(|m| (m.seq, m)));
        }
        let mut rendered = Vec::with_capacity(events.len());
        for event in events {
            let data = match event.kind {
                EventKind::MessageCreated => {
                    let record = event.thread_seq.and_then(|s| messages.get(&s)).ok_or_else(|| missing(event))?;
                    json!({ "message": Message::view(record.clone(), &participants) })
                }
                EventKind::ThreadCreated => {
                    let viewer = participants.first().ok_or_else(|| missing(event))?.user.id;
                    let mut record = store.thread(thread, viewer).await?.ok_or_else(|| missing(event))?;
                    // The thread as it was made: its first message, nobody's unread count.
                    let first = store.messages(thread, Cursor::After(Seq(0)), 1).await?;
                    record.last_message = first.results.into_iter().next();
                    record.unread_count = 0;
                    json!({ "thread": Thread::from(record) })
                }
                EventKind::ThreadRead => json!({
                    "thread_id": event.thread_id,
                    "user_id": event.user_id,
                    "up_to_seq": event.thread_seq,
                }),
            };
            rendered.push(json!({
                "id": event.id,
                "seq": event.seq,
                "type": event.kind.as_str(),
                "created_at": event.created_at,
                "data": data,
            }));
        }
        Ok(rendered)
    }
}

fn missing(event: &StoredEvent) -> Error {
    Error::Internal(format!("event {} names a thread or message that is not stored", event.seq).into())
}
