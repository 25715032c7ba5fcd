//! Store and validation errors as canonical gRPC statuses (JQ-171): a
//! human message, the right code, and never an internal detail — those go
//! to the log.

use jq_core::input::echo;
use jq_core::{TransitionError, ValidationError};
use jq_store::StoreError;
use tonic::Status;
use uuid::Uuid;

pub fn from_store(e: StoreError) -> Status {
    match e {
        StoreError::JobNotFound(_)
        | StoreError::QueueNotFound(_)
        | StoreError::WorkerNotFound(_)
        | StoreError::ScheduleNotFound(_) => Status::not_found(e.to_string()),
        StoreError::QueueExists(_) | StoreError::ScheduleExists(_) => Status::already_exists(e.to_string()),
        StoreError::QueueNotEmpty { .. } | StoreError::JobNotTerminal(_) | StoreError::WorkerOffline(_) => {
            Status::failed_precondition(e.to_string())
        }
        StoreError::Transition(t) => from_transition(t),
        StoreError::Invalid(v) => from_validation(v),
        StoreError::Refused(_) => Status::invalid_argument(e.to_string()),
        StoreError::Contention(_) => Status::aborted(e.to_string()),
        StoreError::Tls(inner) => {
            tracing::error!(error = %inner, "TLS to PostgreSQL failed");
            Status::unavailable("the database is unavailable; try again shortly")
        }
        StoreError::Unavailable(inner) => {
            tracing::warn!(error = %inner, "database unavailable");
            Status::unavailable("the database is unavailable; try again shortly")
        }
        StoreError::Database(inner) => {
            tracing::error!(error = %inner, "database error");
            Status::internal("internal error")
        }
        StoreError::Migration(inner) => {
            tracing::error!(error = %inner, "migration error");
            Status::internal("internal error")
        }
    }
}

pub fn from_transition(t: TransitionError) -> Status {
    match t {
        // JQ-110: a zombie's call is aborted; it must drop the attempt.
        TransitionError::StaleAttempt { .. } | TransitionError::NotOwner { .. } => {
            Status::aborted(t.to_string())
        }
        TransitionError::InvalidState { .. } | TransitionError::ConflictingReport { .. } => {
            Status::failed_precondition(t.to_string())
        }
    }
}

pub fn from_validation(v: ValidationError) -> Status {
    // A field over its limit is the caller's argument; a message over the
    // transport's limit is RESOURCE_EXHAUSTED (grpc::layer).
    Status::invalid_argument(v.to_string())
}

/// Parse a job id, or INVALID_ARGUMENT naming the bad value.
pub fn job_id(s: &str) -> Result<Uuid, Status> {
    job_id_of("job_id", s)
}

/// [`job_id`] for a field of another name (`in_flight.job_id`).
pub fn job_id_of(field: &str, s: &str) -> Result<Uuid, Status> {
    s.trim()
        .parse()
        .map_err(|_| Status::invalid_argument(format!("{field} {} is not a valid job id (a UUID)", echo(s))))
}

pub use jq_proto::code_name;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn jq_171_store_errors_map_to_canonical_codes_without_internals() {
        let id = Uuid::nil();
        assert_eq!(from_store(StoreError::JobNotFound(id)).code(), Code::NotFound);
        assert_eq!(
            from_store(StoreError::QueueNotFound("q".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            from_store(StoreError::QueueExists("q".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            from_store(StoreError::QueueNotEmpty {
                name: "q".into(),
                jobs: 2
            })
            .code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            from_store(StoreError::Transition(TransitionError::StaleAttempt {
                presented: 1,
                current: 2
            }))
            .code(),
            Code::Aborted
        );
        assert_eq!(
            from_store(StoreError::Transition(TransitionError::InvalidState {
                command: "cancel",
                status: jq_core::JobStatus::Done
            }))
            .code(),
            Code::FailedPrecondition
        );
        let internal = from_store(StoreError::Database(sqlx::Error::Protocol(
            "secret detail".into(),
        )));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"));
        let unavailable = from_store(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
        assert_eq!(unavailable.code(), Code::Unavailable);
    }

    #[test]
    fn jq_171_bad_job_id_is_invalid_argument() {
        let s = job_id("not-a-uuid").unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("not-a-uuid"));
        assert!(job_id(&Uuid::new_v4().to_string()).is_ok());
    }
}
