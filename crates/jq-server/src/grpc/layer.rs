//! A tower layer around every gRPC call: takes the request id from the
//! `x-request-id` metadata (or makes one), runs the call inside a span that
//! carries it — so every log line of the request has `request_id` — echoes
//! it back, and records `jq_grpc_request_duration_seconds{method,status_code}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use jq_telemetry::ServerMetrics;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::status::code_name;

#[derive(Clone)]
pub struct RequestLayer {
    pub metrics: Arc<ServerMetrics>,
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    metrics: Arc<ServerMetrics>,
}

impl<S, B, RB> Service<Request<B>> for RequestService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let span = tracing::info_span!("grpc", request_id = %request_id, method = %method);
        // The clone that was made ready is the one to call (tower contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let start = Instant::now();
        Box::pin(
            async move {
                let mut res = inner.call(req).await;
                let code = match &res {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(|c| code_name(tonic::Code::from_i32(c)))
                        .unwrap_or("OK"),
                    Err(_) => "UNKNOWN",
                };
                metrics
                    .grpc_duration
                    .with_label_values(&[&method, code])
                    .observe(start.elapsed().as_secs_f64());
                if let Ok(r) = &mut res
                    && let Ok(v) = HeaderValue::from_str(&request_id)
                {
                    r.headers_mut().insert("x-request-id", v);
                }
                if code != "OK" {
                    tracing::info!(status_code = code, "request failed");
                }
                res
            }
            .instrument(span),
        )
    }
}
