//! Hire Me and proposals: find-or-create a two-person thread, with a system message
//! only when it is created. The store makes it exactly-once; this layer decides who
//! may do what.

use tokio::sync::oneshot;

use super::committer::{Job, OpenJob};
use super::{Chat, Error, Result};
use crate::domain::{
    ErrorCode, JobId, JobStatus, LongText, Money, Proposal, Role, SystemMessage, Thread, User, UserId,
};
use crate::store::{NewProposal, OpenThread, Opened, StoreError, ThreadKey};

/// A thread a workflow found or created.
#[derive(Debug, Clone)]
pub struct Opening {
    pub thread: Thread,
    pub created: bool,
}

/// A stored proposal with its thread.
#[derive(Debug, Clone)]
pub struct ProposalSubmitted {
    pub proposal: Proposal,
    pub opening: Opening,
}

impl Chat {
    fn check_workflow_rate(&self, caller: &User) -> Result<()> {
        if self.workflow_rate.allow(caller.id) {
            Ok(())
        } else {
            Err(Error::rejected(ErrorCode::RateLimited, "too many new conversations for now; try again in a minute"))
        }
    }

    /// Hire Me: the caller's direct thread with a freelancer, created on first use.
    ///
    /// # Errors
    /// `forbidden` for a caller who is not a client; `validation_failed` for hiring
    /// oneself or someone who is not a freelancer; `not_found` for an unknown user.
    pub async fn hire_freelancer(&self, caller: &User, freelancer: UserId) -> Result<Opening> {
        if caller.role != Role::Client {
            return Err(Error::forbidden("only clients can hire freelancers"));
        }
        self.check_workflow_rate(caller)?;
        if freelancer == caller.id {
            return Err(Error::validation("you cannot hire yourself"));
        }
        let freelancer = self.store().user(freelancer).await?.ok_or_else(|| Error::not_found("freelancer"))?;
        if freelancer.role != Role::Freelancer {
            return Err(Error::validation(format!("user {} is not a freelancer", freelancer.id)));
        }
        let open = OpenThread {
            key: ThreadKey::Direct { a: caller.id, b: freelancer.id },
            first_message: Some(SystemMessage::hire(caller, &freelancer)),
        };
        let (_, opened) = self.open_in_order(open, None, [caller.clone(), freelancer]).await??;
        self.opening(caller, opened).await
    }

    /// Proposal chat: the caller's job thread with the job's client, created on first use.
    ///
    /// # Errors
    /// `forbidden` for a caller who is not a freelancer; `not_found` for an unknown job.
    pub async fn proposal_chat(&self, caller: &User, job: JobId) -> Result<Opening> {
        if caller.role != Role::Freelancer {
            return Err(Error::forbidden("only freelancers can start a proposal chat"));
        }
        self.check_workflow_rate(caller)?;
        let job = self.job(job).await?;
        let open = OpenThread {
            key: ThreadKey::Job { job: job.id, a: caller.id, b: job.client.id },
            first_message: Some(SystemMessage::proposal(caller, &job)),
        };
        let (_, opened) = self.open_in_order(open, None, [caller.clone(), job.client]).await??;
        self.opening(caller, opened).await
    }

    /// Stores a proposal and opens its job thread, together or not at all.
    ///
    /// # Errors
    /// `forbidden` for a caller who is not a freelancer; `not_found` for an unknown job;
    /// `validation_failed` for a bad field; `conflict` for a closed job or a second
    /// proposal by the same freelancer; `rate_limited` past the workflow limit.
    pub async fn submit_proposal(
        &self,
        caller: &User,
        job: JobId,
        cover_letter: String,
        bid_amount: f64,
    ) -> Result<ProposalSubmitted> {
        if caller.role != Role::Freelancer {
            return Err(Error::forbidden("only freelancers can submit proposals"));
        }
        self.check_workflow_rate(caller)?;
        let cover_letter = LongText::parse("cover_letter", cover_letter)?.into_inner();
        let bid_amount = Money::parse("bid_amount", bid_amount)?;
        let job = self.job(job).await?;
        if job.status != JobStatus::Open {
            return Err(Error::rejected(ErrorCode::Conflict, "this job is closed to proposals"));
        }
        let open = OpenThread {
            key: ThreadKey::Job { job: job.id, a: caller.id, b: job.client.id },
            first_message: Some(SystemMessage::proposal(caller, &job)),
        };
        let new = NewProposal { job: job.id, freelancer: caller.clone(), cover_letter, bid_amount };
        let (proposal, opened) =
            self.open_in_order(open, Some(new), [caller.clone(), job.client]).await?.map_err(|e| match e {
                StoreError::Conflict(_) => {
                    Error::rejected(ErrorCode::Conflict, "you have already submitted a proposal for this job")
                }
                other => other.into(),
            })?;
        let proposal =
            proposal.ok_or_else(|| Error::Internal("the committer answered a proposal without it".into()))?;
        let opening = self.opening(caller, opened).await?;
        Ok(ProposalSubmitted { proposal, opening })
    }

    /// Runs a find-or-create on the committer, which publishes a new thread's system
    /// message (seq 1) in commit order, before anything sent into the thread after it.
    async fn open_in_order(
        &self,
        open: OpenThread,
        proposal: Option<NewProposal>,
        participants: [User; 2],
    ) -> Result<Result<(Option<Proposal>, Opened), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Open(Box::new(OpenJob { open, proposal, participants, reply }));
        self.enqueue(job).await?;
        // The committer stops only at shutdown: the caller is told to try again.
        answer.await.map_err(|_| Error::rejected(ErrorCode::Unavailable, "the server is shutting down; try again"))
    }

    /// The thread as the caller sees it: one just found or created with the caller
    /// in it, so its absence is a fault, not a `not_found`.
    async fn opening(&self, caller: &User, opened: Opened) -> Result<Opening> {
        let thread = self.store().thread(opened.thread_id, caller.id).await?;
        let thread = thread.ok_or_else(|| Error::Internal("a thread just opened is gone".into()))?;
        Ok(Opening { thread: thread.into(), created: opened.created })
    }
}
