//! The gRPC services. Each handler converts the request into `jq-core`
//! types, calls the store, tells the registry/dispatcher what changed, and
//! converts back. Errors are canonical statuses (see `status`).

pub mod admin;
pub mod auth;
pub mod job;
pub mod layer;
pub mod worker;

use jq_proto::v1;

pub(crate) fn control(kind: v1::server_message::Kind) -> v1::ServerMessage {
    v1::ServerMessage { kind: Some(kind) }
}
