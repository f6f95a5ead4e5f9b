//! Request metrics in Prometheus text format, with one log line per request. The
//! registry lives in the app state (not a global), so servers in one test process
//! keep separate counts.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    /// # Errors
    /// Only if two metrics share a name, which is a bug.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("confab".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route and method")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { registry, requests, latency })
    }

    /// The registry, for other parts (WebSocket, store) to add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// # Errors
    /// Only if a metric cannot be encoded.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// Counts and times every request by its route pattern (never the raw path, whose
/// ids would make the label set unbounded), and logs one line for it.
pub(crate) async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status();
    metrics.requests.with_label_values(&[method.as_str(), &route, status.as_str()]).inc();
    metrics.latency.with_label_values(&[method.as_str(), &route]).observe(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if route == "/healthz" || route == "/metrics" {
        tracing::debug!(%method, %path, status = status.as_u16(), latency_ms, "request");
    } else {
        tracing::info!(%method, %path, status = status.as_u16(), latency_ms, "request");
    }
    response
}
