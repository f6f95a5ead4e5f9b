//! Freelancer profiles and jobs: just enough marketplace for the workflows.

use super::{Chat, Error, Result};
use crate::domain::{Freelancer, Job, JobId, LongText, Page, PageRequest, Role, ShortText, User, UserId};
use crate::store::NewJob;

impl Chat {
    pub async fn freelancers(&self, page: PageRequest) -> Result<Page<Freelancer>> {
        Ok(self.store().freelancers(page).await?)
    }

    /// # Errors
    /// `not_found` when no freelancer has this id.
    pub async fn freelancer(&self, id: UserId) -> Result<Freelancer> {
        self.store().freelancer(id).await?.ok_or_else(|| Error::not_found("freelancer"))
    }

    /// Posts a job.
    ///
    /// # Errors
    /// `forbidden` for a caller who is not a client, `validation_failed` for a bad field.
    pub async fn create_job(&self, caller: &User, title: String, description: String) -> Result<Job> {
        if caller.role != Role::Client {
            return Err(Error::forbidden("only clients can post jobs"));
        }
        let title = ShortText::parse("title", title)?.into_inner();
        let description = LongText::parse("description", description)?.into_inner();
        Ok(self.store().create_job(NewJob { client: caller.id, title, description }).await?)
    }

    pub async fn jobs(&self, page: PageRequest) -> Result<Page<Job>> {
        Ok(self.store().jobs(page).await?)
    }

    /// # Errors
    /// `not_found` when no job has this id.
    pub async fn job(&self, id: JobId) -> Result<Job> {
        self.store().job(id).await?.ok_or_else(|| Error::not_found("job"))
    }
}
