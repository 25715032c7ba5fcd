//! JQ-170 bearer tokens with roles, FR-047 mTLS, and the standard gRPC
//! health and reflection services.

mod common;

use common::*;
use jq_proto::v1;
use jq_proto::v1::admin_service_client::AdminServiceClient;
use jq_proto::v1::job_service_client::JobServiceClient;
use jq_testkit::TestDb;
use jq_testkit::pki::Pki;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn with_token(
    token: &'static str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut req: tonic::Request<()>| {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(req)
    }
}

#[tokio::test]
async fn jq_170_tokens_and_roles_gate_every_service() {
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.auth.enabled = true;
    cfg.auth.tokens = "submitter:sub-secret,admin:adm-secret".into();
    let server = jq_server::start(cfg).await.unwrap();
    let ch = channel(server.grpc_addr).await;

    let e = JobServiceClient::new(ch.clone())
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("default", "{}")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = JobServiceClient::with_interceptor(ch.clone(), with_token("wrong"))
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("default", "{}")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    JobServiceClient::with_interceptor(ch.clone(), with_token("sub-secret"))
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("default", "{}")),
        })
        .await
        .unwrap();
    let e = AdminServiceClient::with_interceptor(ch.clone(), with_token("sub-secret"))
        .list_queues(v1::ListQueuesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(!e.message().contains("sub-secret"));
    AdminServiceClient::with_interceptor(ch.clone(), with_token("adm-secret"))
        .list_queues(v1::ListQueuesRequest {})
        .await
        .unwrap();
    // Health checks need no token.
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap();
    server.shutdown().await;
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

#[tokio::test]
async fn fr_047_mtls_requires_a_client_certificate_signed_by_the_ca() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.tls.enabled = true;
    cfg.tls.cert = pki.file("server.pem");
    cfg.tls.key = pki.file("server.key");
    cfg.tls.ca = pki.file("ca.pem");
    let server = jq_server::start(cfg).await.unwrap();
    let addr = server.grpc_addr;

    // With a client certificate: works.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .identity(Identity::from_pem(pki.read("client.pem"), pki.read("client.key")))
        .domain_name("localhost");
    let ch = tls_channel(addr, tls).await.unwrap();
    AdminServiceClient::new(ch)
        .list_queues(v1::ListQueuesRequest {})
        .await
        .unwrap();

    // Without one: refused.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    let refused = match tls_channel(addr, tls).await {
        Err(_) => true,
        Ok(ch) => AdminServiceClient::new(ch)
            .list_queues(v1::ListQueuesRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    // Plaintext: refused.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => AdminServiceClient::new(ch)
            .list_queues(v1::ListQueuesRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "plaintext must be refused when TLS is on");
    server.shutdown().await;
}

#[tokio::test]
async fn fr_047_tls_off_serves_plaintext_for_local_development() {
    let mut env = start().await;
    env.admin.list_queues(v1::ListQueuesRequest {}).await.unwrap();
    env.server.shutdown().await;
}

#[tokio::test]
async fn grpc_health_and_reflection_work_without_our_protos() {
    let env = start().await;
    let ch = channel(env.server.grpc_addr).await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for svc in [
        "",
        "jq.v1.JobService",
        "jq.v1.WorkerService",
        "jq.v1.AdminService",
    ] {
        let r = h
            .check(tonic_health::pb::HealthCheckRequest { service: svc.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{svc}"
        );
    }
    // Reflection: list services like grpcurl does.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut r = ServerReflectionClient::new(ch);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in ["jq.v1.JobService", "jq.v1.WorkerService", "jq.v1.AdminService"] {
        assert!(names.contains(&s.to_string()), "{s} not in {names:?}");
    }
    env.server.shutdown().await;
}
