//! The gRPC services. Each handler converts the request into `jq-core`
//! types, calls the store, and converts back; what a committed transition
//! means beyond the database is `crate::effects`'s. Errors are canonical
//! statuses (see `status`).

pub mod admin;
pub mod auth;
pub mod job;
pub mod layer;
pub mod worker;

use std::sync::Arc;

use jq_proto::v1;
use jq_proto::v1::admin_service_server::AdminServiceServer;
use jq_proto::v1::job_service_server::JobServiceServer;
use jq_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;

pub(crate) fn control(kind: v1::server_message::Kind) -> v1::ServerMessage {
    v1::ServerMessage { kind: Some(kind) }
}

/// The gRPC server on `listener`, ready to be spawned: TLS and bearer
/// tokens as configured, the three services behind the request layer,
/// standard health (Kubernetes gRPC probes) and reflection (grpcurl).
pub async fn server(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
    let cfg = &shared.cfg;
    let max = cfg.server.max_message_bytes as usize;
    let tokens = if cfg.auth.enabled {
        let pairs = jq_config::server::parse_tokens(&cfg.auth.tokens).map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(tokens = pairs.len(), "bearer-token auth on");
        Some(auth::Tokens::new(pairs))
    } else {
        None
    };
    let mut builder = tonic::transport::Server::builder();
    if cfg.tls.enabled {
        builder = builder.tls_config(tls_config(&cfg.tls)?)?;
        tracing::info!(client_certs_required = !cfg.tls.ca.is_empty(), "TLS on");
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in [
        "jq.v1.JobService",
        "jq.v1.WorkerService",
        "jq.v1.AdminService",
        "",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(jq_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // No Nagle: pushed assignments and small replies must leave at once,
    // not wait for the peer's delayed ACK (~40 ms per hop).
    let incoming =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
            s.and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
        });
    Ok(builder
        .layer(layer::RequestLayer {
            metrics: shared.metrics.clone(),
        })
        .layer(auth::AuthLayer { tokens })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            JobServiceServer::new(job::Jobs(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            WorkerServiceServer::new(worker::Workers(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            AdminServiceServer::new(admin::Admin(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()))
}

/// rustls server config: our certificate, and when a CA is given, client
/// certificates signed by it are required (mTLS, FR-047).
fn tls_config(t: &jq_config::server::Tls) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read tls.{what} {path}: {e}"))
    };
    let identity = tonic::transport::Identity::from_pem(read("cert", &t.cert)?, read("key", &t.key)?);
    let mut c = tonic::transport::ServerTlsConfig::new().identity(identity);
    if !t.ca.is_empty() {
        c = c.client_ca_root(tonic::transport::Certificate::from_pem(read("ca", &t.ca)?));
    }
    Ok(c)
}
