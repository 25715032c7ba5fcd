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
                if let Ok(r) = &mut res {
                    refusals_of_the_decoder(r.headers_mut());
                }
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

/// A request the decoder refused is the client's fault, and says so:
/// - over `max_decoding_message_size`, tonic answers OUT_OF_RANGE; gRPC's
///   convention and JQ-104 say RESOURCE_EXHAUSTED, with the limit;
/// - bytes that are not the method's message (a string that is not UTF-8,
///   a truncated field), tonic-prost answers INTERNAL; JQ-105 says no
///   request is answered INTERNAL: it is INVALID_ARGUMENT.
///
/// Both refusals are trailers-only responses, so the status is in the
/// headers; nothing reached a handler.
fn refusals_of_the_decoder(headers: &mut http::HeaderMap) {
    let code = headers.get("grpc-status").map(|v| v.as_bytes().to_vec());
    if !matches!(code.as_deref(), Some(b"11" | b"13")) {
        return;
    }
    let Some(st) = tonic::Status::from_header_map(headers) else {
        return;
    };
    let ours = if let Some(sizes) = st
        .message()
        .strip_prefix("Error, decoded message length too large: found ")
    {
        oversize(sizes)
    } else if let Some(why) = st.message().strip_prefix("failed to decode Protobuf message: ") {
        tonic::Status::invalid_argument(format!(
            "the request is not a valid message of this method: {}",
            jq_core::input::echo(why).trim_matches('"')
        ))
    } else {
        return;
    };
    headers.remove("grpc-message");
    let _ = ours.add_header(headers);
}

fn oversize(sizes: &str) -> tonic::Status {
    // "{found} bytes, the limit is: {limit} bytes"
    let mut numbers = sizes
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let (found, limit) = (numbers.next().unwrap_or("?"), numbers.next().unwrap_or("?"));
    tonic::Status::resource_exhausted(format!(
        "the request is {found} bytes, more than this server's limit of {limit} bytes per message (server.max_message_bytes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `st` as the decoder's response headers, after the rewrite.
    fn rewritten(st: tonic::Status) -> tonic::Status {
        let mut h = http::HeaderMap::new();
        st.add_header(&mut h).unwrap();
        refusals_of_the_decoder(&mut h);
        tonic::Status::from_header_map(&h).unwrap()
    }

    #[test]
    fn jq_104_the_decoders_out_of_range_becomes_resource_exhausted_with_the_limit() {
        let st = rewritten(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 20971525 bytes, the limit is: 16777216 bytes",
        ));
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert!(
            st.message().contains("20971525") && st.message().contains("16777216"),
            "{}",
            st.message()
        );
        // Any other OUT_OF_RANGE is left alone.
        assert_eq!(
            rewritten(tonic::Status::out_of_range("page 9 of 3")).code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn jq_105_a_message_that_does_not_decode_is_invalid_argument_not_internal() {
        let st = rewritten(tonic::Status::internal(
            "failed to decode Protobuf message: GetJobRequest.job_id: invalid string value: data is not UTF-8 encoded",
        ));
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert!(st.message().contains("GetJobRequest.job_id"), "{}", st.message());
        // A handler's own INTERNAL (none should exist) is not disguised.
        assert_eq!(
            rewritten(tonic::Status::internal("internal error")).code(),
            tonic::Code::Internal
        );
    }
}
