//! The browser app and the embeddable widget: files of `web/` compiled into the
//! binary. Assets live under `/assets/<version>/…`, where the version is a hash of
//! every file, so they can be cached for a year; the pages (one HTML shell for
//! every route of the app) are never cached and name the current version.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::ApiError;
use crate::domain::{ErrorCode, Thread};

/// The app's files. Tests and tooling (`node_modules`) stay out of the binary.
#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "tests/*"]
#[exclude = "node_modules/*"]
struct Assets;

/// The routes of the browser app, as the original system named them; each answers
/// with the same shell, and the app draws the page from the address.
pub(crate) const PAGES: [&str; 11] = [
    "/signin",
    "/signup",
    "/freelancers",
    "/freelancers/{id}",
    "/jobs",
    "/jobs/{id}",
    "/my-jobs",
    "/dashboard",
    "/dashboard/inbox",
    "/dashboard/inbox/{id}",
    "/chat-demo",
];

/// Where a Hire Me or proposal sends the browser: the inbox page of the thread
/// (`/dashboard/inbox/{id}` of [`PAGES`]).
pub(crate) fn redirect_url(thread: &Thread) -> String {
    format!("/dashboard/inbox/{}", thread.id)
}

/// Scripts, styles and connections only from this server; no inline script, no
/// plugins, no framing by other sites.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

/// A hash of every embedded file: changes whenever any of them does.
pub(crate) fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut names: Vec<_> = Assets::iter().collect();
        names.sort();
        // FNV-1a over the files' own SHA-256 hashes: short, stable, enough to bust caches.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for name in names {
            if let Some(file) = Assets::get(&name) {
                for byte in name.as_bytes().iter().chain(file.metadata.sha256_hash().iter()) {
                    hash ^= u64::from(*byte);
                    hash = hash.wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        format!("{hash:016x}")
    })
}

/// The HTML shell, naming the current asset version.
pub(crate) async fn page() -> Response {
    let Some(file) = Assets::get("index.html") else {
        return ApiError::new(ErrorCode::NotFound, "the web app is not in this build").into_response();
    };
    let html = String::from_utf8_lossy(&file.data).replace("{{VERSION}}", version());
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// `/`: the app for a browser, the JSON index for anything else (scripts, probes).
pub(crate) async fn index(headers: HeaderMap) -> Response {
    let wants_html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"));
    if wants_html { page().await } else { super::ops::index().await.into_response() }
}

/// `/assets/<version>/<path>`: a year of caching for the current version; an old
/// version's request still gets today's file, uncached.
pub(crate) async fn asset(Path((asked, path)): Path<(String, String)>) -> Response {
    serve_file(&path, asked == version())
}

/// `/widget.js`: the embedding entry point at a stable address, for other sites. It
/// imports the current version's module, so the rest is cached like any asset.
pub(crate) async fn widget() -> Response {
    let body =
        format!("// Confab's embeddable chat: see docs/embedding.md.\nimport \"./assets/{}/widget.js\";\n", version());
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn serve_file(path: &str, immutable: bool) -> Response {
    if path == "index.html" {
        return ApiError::new(ErrorCode::NotFound, "no such file").into_response();
    }
    let Some(file) = Assets::get(path) else {
        return ApiError::new(ErrorCode::NotFound, format!("no file {path:?} in the web app")).into_response();
    };
    let mime = file.metadata.mimetype();
    let mut response = Response::new(Body::from(file.data.into_owned()));
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    // Other sites load the widget's modules: module scripts are fetched with CORS.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}
