//! Bearer-token auth with roles (JQ-170). Each RPC needs a role: JobService
//! calls `submitter`, WorkerService calls `worker`, AdminService calls
//! `admin`; `admin` may call everything. No or unknown token is
//! UNAUTHENTICATED, a known token of the wrong role PERMISSION_DENIED.
//! Tokens are compared in constant time and never logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Submitter,
    Worker,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "submitter" => Some(Role::Submitter),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The role an RPC path needs; `None` for open services (health checks,
/// reflection).
pub fn required_role(path: &str) -> Option<Role> {
    if path.starts_with("/jq.v1.JobService/") {
        Some(Role::Submitter)
    } else if path.starts_with("/jq.v1.WorkerService/") {
        Some(Role::Worker)
    } else if path.starts_with("/jq.v1.AdminService/") {
        Some(Role::Admin)
    } else {
        None
    }
}

/// Equal in time independent of where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[derive(Clone)]
pub struct Tokens(Arc<Vec<(Role, Vec<u8>)>>);

impl Tokens {
    pub fn new(pairs: Vec<(String, String)>) -> Tokens {
        Tokens(Arc::new(
            pairs
                .into_iter()
                .filter_map(|(r, t)| Role::parse(&r).map(|r| (r, t.into_bytes())))
                .collect(),
        ))
    }

    /// Roles of a presented token (every entry is checked, match or not).
    fn roles(&self, presented: &[u8]) -> Vec<Role> {
        let mut roles = vec![];
        for (role, token) in self.0.iter() {
            if ct_eq(token, presented) {
                roles.push(*role);
            }
        }
        roles
    }

    pub fn check(&self, path: &str, authorization: Option<&str>) -> Result<(), Status> {
        let Some(need) = required_role(path) else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("missing bearer token (authorization: Bearer <token>)"))?;
        let roles = self.roles(presented.as_bytes());
        if roles.is_empty() {
            return Err(Status::unauthenticated("invalid token"));
        }
        if roles.contains(&need) || roles.contains(&Role::Admin) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                format!("this token lacks the {need:?} role for {path}").to_lowercase(),
            ))
        }
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    pub tokens: Option<Tokens>,
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Option<Tokens>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(tokens) = &self.tokens {
            let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
            if let Err(status) = tokens.check(req.uri().path(), header) {
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            ("submitter".into(), "sub-token".into()),
            ("worker".into(), "wrk-token".into()),
            ("admin".into(), "adm-token".into()),
        ])
    }

    #[test]
    fn jq_170_roles_gate_services() {
        let t = tokens();
        let submit = "/jq.v1.JobService/SubmitJob";
        let ack = "/jq.v1.WorkerService/AckJob";
        let admin = "/jq.v1.AdminService/ListQueues";
        assert!(t.check(submit, Some("Bearer sub-token")).is_ok());
        assert!(t.check(ack, Some("Bearer wrk-token")).is_ok());
        for p in [submit, ack, admin] {
            assert!(t.check(p, Some("Bearer adm-token")).is_ok(), "admin may call {p}");
        }
        assert_eq!(
            t.check(admin, Some("Bearer sub-token")).unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            t.check(submit, Some("Bearer wrk-token")).unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(t.check(submit, None).unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(
            t.check(submit, Some("Bearer nope")).unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            t.check(submit, Some("Basic abc")).unwrap_err().code(),
            Code::Unauthenticated
        );
        // Health checks and reflection stay open.
        assert!(t.check("/grpc.health.v1.Health/Check", None).is_ok());
    }

    #[test]
    fn jq_170_errors_never_echo_the_token() {
        let e = tokens()
            .check("/jq.v1.AdminService/ListQueues", Some("Bearer sub-token"))
            .unwrap_err();
        assert!(!e.message().contains("sub-token"));
    }

    #[test]
    fn jq_170_constant_time_compare_is_exact() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }
}
