//! # jq-client
//!
//! How `jq-worker` and `jq-ctl` reach `jq-server`: one place that turns an
//! address, optional TLS files and an optional bearer token into gRPC
//! clients, so both binaries accept the same settings and fail the same
//! way on bad ones.
//!
//! # Layout
//! - [`Target`]: where and how to connect; [`Target::endpoint`] checks it.
//! - [`Token`]: the interceptor adding `authorization: Bearer …` (JQ-170).
//! - [`Clients`]: the three service clients over one channel.
//! - [`batch`]: calls that arrive while one is in flight go together in
//!   the next (the worker's acks and results; the server's group commits).

pub mod batch;

use std::time::Duration;

use jq_proto::v1::admin_service_client::AdminServiceClient;
use jq_proto::v1::job_service_client::JobServiceClient;
use jq_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub addr: String,
    /// PEM files. A CA (or `https://`) turns TLS on; cert + key add a client
    /// certificate for mTLS (FR-047/FR-048).
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Name to verify the server certificate against (default: the host).
    pub tls_domain: Option<String>,
    /// Bearer token (JQ-170).
    pub token: Option<String>,
    /// Connect timeout; also applied per request when `request_timeout` is
    /// unset.
    pub connect_timeout: Option<Duration>,
    /// Deadline of each unary request (NFR-004). Streams have none.
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot read {what} file {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("the token contains characters not allowed in a header")]
    Token,
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File {
        what,
        path: path.to_string(),
        source,
    })
}

impl Target {
    pub fn new(addr: impl Into<String>) -> Target {
        Target {
            addr: addr.into(),
            ..Default::default()
        }
    }

    fn tls_wanted(&self) -> bool {
        self.addr.starts_with("https://") || self.tls_ca.is_some() || self.tls_cert.is_some()
    }

    /// The URI: a bare `host:port` gets `http://`, or `https://` with TLS.
    pub fn uri(&self) -> Result<String, ClientError> {
        let addr = self.addr.trim();
        let bad = |reason: &str| ClientError::Address {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        };
        if addr.is_empty() {
            return Err(bad("it is empty"));
        }
        let uri = if addr.contains("://") {
            if !(addr.starts_with("http://") || addr.starts_with("https://")) {
                return Err(bad("use host:port, http://host:port or https://host:port"));
            }
            if addr.starts_with("http://") && self.tls_wanted() {
                return Err(bad("http:// cannot be used with TLS files; use https://"));
            }
            addr.to_string()
        } else if self.tls_wanted() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let parsed: tonic::codegen::http::Uri = uri.parse().map_err(|_| bad("not a valid URI"))?;
        if parsed.port_u16().is_none() {
            return Err(bad("a port is required, e.g. localhost:50051"));
        }
        Ok(uri)
    }

    /// A checked endpoint; nothing is dialled yet.
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let uri = self.uri()?;
        let mut ep = Endpoint::from_shared(uri.clone()).map_err(|e| ClientError::Address {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        ep = ep
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        ep = ep
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(t) = self.connect_timeout {
            ep = ep.connect_timeout(t);
        }
        if let Some(t) = self.request_timeout {
            ep = ep.timeout(t);
        }
        if uri.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read("TLS CA", ca)?));
            }
            match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(
                        read("TLS certificate", c)?,
                        read("TLS key", k)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(ClientError::Tls(
                        "a client certificate needs both --tls-cert and --tls-key".into(),
                    ));
                }
            }
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep
                .tls_config(tls)
                .map_err(|e| ClientError::Tls(format!("TLS settings: {e}")))?;
        }
        Ok(ep)
    }

    /// Dial now; fails fast when the server is unreachable.
    pub async fn connect(&self) -> Result<Clients, ClientError> {
        let ep = self.endpoint()?;
        let channel = ep.connect().await.map_err(|source| ClientError::Connect {
            addr: self.addr.clone(),
            source,
        })?;
        Clients::new(channel, self.token.as_deref())
    }

    /// Dial on first use and re-dial after failures (long-lived callers).
    pub fn connect_lazy(&self) -> Result<Clients, ClientError> {
        Clients::new(self.endpoint()?.connect_lazy(), self.token.as_deref())
    }
}

/// Adds the bearer token, when there is one, to every request.
#[derive(Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Token {
    pub fn new(token: Option<&str>) -> Result<Token, ClientError> {
        match token.filter(|t| !t.is_empty()) {
            None => Ok(Token(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Token(Some(v)))
                .map_err(|_| ClientError::Token),
        }
    }
}

impl std::fmt::Debug for Token {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Token(***)"
        } else {
            "Token(none)"
        })
    }
}

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Token>;

/// The three services over one channel (cheap to clone).
#[derive(Clone, Debug)]
pub struct Clients {
    pub jobs: JobServiceClient<Authed>,
    pub workers: WorkerServiceClient<Authed>,
    pub admin: AdminServiceClient<Authed>,
}

impl Clients {
    pub fn new(channel: Channel, token: Option<&str>) -> Result<Clients, ClientError> {
        let t = Token::new(token)?;
        Ok(Clients {
            jobs: JobServiceClient::with_interceptor(channel.clone(), t.clone()),
            workers: WorkerServiceClient::with_interceptor(channel.clone(), t.clone()),
            admin: AdminServiceClient::with_interceptor(channel, t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: &str) -> Target {
        Target::new(addr)
    }

    #[test]
    fn bare_address_gets_http_or_https_with_tls() {
        assert_eq!(t("localhost:50051").uri().unwrap(), "http://localhost:50051");
        assert_eq!(t("https://h:1").uri().unwrap(), "https://h:1");
        let tls = Target {
            tls_ca: Some("ca.pem".into()),
            ..t("h:443")
        };
        assert_eq!(tls.uri().unwrap(), "https://h:443");
    }

    #[test]
    fn bad_addresses_are_refused_with_the_reason() {
        for (addr, why) in [
            ("", "empty"),
            ("localhost", "port is required"),
            ("grpc://h:1", "host:port"),
            ("http://h:1 2", "valid URI"),
        ] {
            let e = t(addr).uri().unwrap_err().to_string();
            assert!(e.contains(why), "{addr:?}: {e}");
        }
        let mixed = Target {
            tls_ca: Some("ca.pem".into()),
            ..t("http://h:1")
        };
        assert!(mixed.uri().unwrap_err().to_string().contains("use https://"));
    }

    #[test]
    fn missing_tls_files_and_half_identities_are_errors() {
        let missing = Target {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..t("h:1")
        };
        let e = missing.endpoint().unwrap_err().to_string();
        assert!(e.contains("TLS CA file /nonexistent/ca.pem"), "{e}");
        let half = Target {
            tls_cert: Some("/dev/null".into()),
            ..t("https://h:1")
        };
        assert!(
            half.endpoint()
                .unwrap_err()
                .to_string()
                .contains("both --tls-cert and --tls-key")
        );
    }

    #[test]
    fn token_is_sent_as_bearer_and_never_printed() {
        let mut tok = Token::new(Some("s3cret")).unwrap();
        let req = tok.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert!(!format!("{tok:?}").contains("s3cret"));
        let mut none = Token::new(Some("")).unwrap();
        assert!(
            none.call(tonic::Request::new(()))
                .unwrap()
                .metadata()
                .get("authorization")
                .is_none()
        );
        assert!(Token::new(Some("bad\ntoken")).is_err());
    }
}
