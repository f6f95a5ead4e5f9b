//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, marketplace, messaging, server_api, threads};

#[derive(OpenApi)]
#[openapi(
    info(title = "Confab", description = "Real-time chat for online marketplaces. Every path also answers without its trailing slash. \
        Messages carry `seq`, their position in their thread (1, 2, 3… with no gap); pages of messages and the \
        WebSocket deliver them in seq order, each once, on every connection (see docs/websocket.md). \
        A `client_msg_id` is scoped to its sender and its thread: the same key with the same text returns the first \
        message, with another text it is 409 `conflict`. The inbox pages by an opaque cursor (`next`)."),
    paths(
        accounts::register_user, accounts::obtain_token, accounts::refresh_token, accounts::get_me,
        marketplace::list_freelancers, marketplace::get_freelancer, marketplace::create_job, marketplace::list_jobs,
        marketplace::get_job, marketplace::submit_proposal,
        threads::hire_freelancer, threads::proposal_chat, threads::list_threads, threads::get_thread,
        threads::list_messages, threads::post_message, threads::mark_thread_read,
        messaging::list_conversation, messaging::get_unread_from, messaging::get_unread_totals,
        server_api::put_user, server_api::put_job, server_api::post_system_message, server_api::list_events,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        // The host backend's routes (present when --server-api-key is set).
        components.add_security_scheme(
            "server_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
