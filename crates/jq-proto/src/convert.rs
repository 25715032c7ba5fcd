//! Conversions between wire types and `jq-core` types.

use chrono::{DateTime, Utc};
use jq_core::{JobStatus, Outcome, WorkerStatus};

use crate::v1;

/// `jq-core` status to wire enum.
pub fn job_status_to_proto(s: JobStatus) -> v1::JobStatus {
    match s {
        JobStatus::Pending => v1::JobStatus::Pending,
        JobStatus::Assigned => v1::JobStatus::Assigned,
        JobStatus::Running => v1::JobStatus::Running,
        JobStatus::Done => v1::JobStatus::Done,
        JobStatus::Failed => v1::JobStatus::Failed,
        JobStatus::DeadLettered => v1::JobStatus::DeadLettered,
    }
}

/// Wire enum (as its i32) to `jq-core` status; `None` for UNSPECIFIED or
/// unknown values.
pub fn job_status_from_proto(v: i32) -> Option<JobStatus> {
    match v1::JobStatus::try_from(v).ok()? {
        v1::JobStatus::Unspecified => None,
        v1::JobStatus::Pending => Some(JobStatus::Pending),
        v1::JobStatus::Assigned => Some(JobStatus::Assigned),
        v1::JobStatus::Running => Some(JobStatus::Running),
        v1::JobStatus::Done => Some(JobStatus::Done),
        v1::JobStatus::Failed => Some(JobStatus::Failed),
        v1::JobStatus::DeadLettered => Some(JobStatus::DeadLettered),
    }
}

pub fn worker_status_to_proto(s: WorkerStatus) -> v1::WorkerStatus {
    match s {
        WorkerStatus::Online => v1::WorkerStatus::Online,
        WorkerStatus::Draining => v1::WorkerStatus::Draining,
        WorkerStatus::Stopping => v1::WorkerStatus::Stopping,
        WorkerStatus::Offline => v1::WorkerStatus::Offline,
    }
}

pub fn worker_status_from_proto(v: i32) -> Option<WorkerStatus> {
    match v1::WorkerStatus::try_from(v).ok()? {
        v1::WorkerStatus::Unspecified => None,
        v1::WorkerStatus::Online => Some(WorkerStatus::Online),
        v1::WorkerStatus::Draining => Some(WorkerStatus::Draining),
        v1::WorkerStatus::Stopping => Some(WorkerStatus::Stopping),
        v1::WorkerStatus::Offline => Some(WorkerStatus::Offline),
    }
}

/// Wire outcome to `jq-core`; `None` for UNSPECIFIED (an invalid report).
pub fn outcome_from_proto(v: i32, retryable: bool) -> Option<Outcome> {
    match v1::Outcome::try_from(v).ok()? {
        v1::Outcome::Unspecified => None,
        v1::Outcome::Succeeded => Some(Outcome::Succeeded),
        v1::Outcome::Failed => Some(Outcome::Failed { retryable }),
        v1::Outcome::Cancelled => Some(Outcome::Cancelled),
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

/// `None` for a timestamp outside chrono's range or with bad nanos.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
}

/// A gRPC code as the protocol spells it (metrics labels, CLI errors).
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn fr_009_status_enums_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(job_status_from_proto(job_status_to_proto(s) as i32), Some(s));
        }
        assert_eq!(job_status_from_proto(0), None);
        assert_eq!(job_status_from_proto(99), None);
        for s in WorkerStatus::ALL {
            assert_eq!(
                worker_status_from_proto(worker_status_to_proto(s) as i32),
                Some(s)
            );
        }
    }

    #[test]
    fn fr_029_outcomes_map_and_unspecified_is_rejected() {
        assert_eq!(
            outcome_from_proto(v1::Outcome::Succeeded as i32, false),
            Some(Outcome::Succeeded)
        );
        assert_eq!(
            outcome_from_proto(v1::Outcome::Failed as i32, false),
            Some(Outcome::Failed { retryable: false })
        );
        assert_eq!(
            outcome_from_proto(v1::Outcome::Cancelled as i32, true),
            Some(Outcome::Cancelled)
        );
        assert_eq!(outcome_from_proto(0, true), None);
    }

    #[test]
    fn timestamps_round_trip_and_bad_nanos_are_rejected() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&timestamp(now)), Some(now));
        assert_eq!(
            from_timestamp(&prost_types::Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }

    #[test]
    fn fr_037_lifecycle_event_encodes_and_decodes() {
        let ev = v1::LifecycleEvent {
            event_id: "e".into(),
            job_id: "j".into(),
            queue: "default".into(),
            from_status: v1::JobStatus::Running as i32,
            to_status: v1::JobStatus::Done as i32,
            occurred_at: Some(timestamp(Utc::now())),
            worker_id: "w".into(),
            reason: "COMPLETED".into(),
            attempt: 3,
            detail: String::new(),
        };
        let bytes = ev.encode_to_vec();
        assert_eq!(v1::LifecycleEvent::decode(bytes.as_slice()).unwrap(), ev);
    }

    #[test]
    fn descriptor_set_names_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<_> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        for s in ["JobService", "WorkerService", "AdminService"] {
            assert!(services.iter().any(|x| x == s), "{s} missing");
        }
    }
}
