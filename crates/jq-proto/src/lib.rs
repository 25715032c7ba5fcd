//! # jq-proto
//!
//! Generated prost/tonic code for `proto/jq/v1`, plus conversions between
//! wire enums and `jq-core` types. Prost types stop at the gRPC edge: servers
//! and clients convert here and work with `jq-core` types inside.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("jq.v1");
}

/// Encoded `FileDescriptorSet` of every jq proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("jq_descriptor");

mod convert;
pub use convert::*;
