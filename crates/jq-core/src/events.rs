//! Which Kafka topic a transition is published on (SPEC §9). Logical names;
//! the relay adds the configured prefix.

use crate::lifecycle::{Reason, Step};
use crate::status::JobStatus;

pub const TOPIC_SUBMITTED: &str = "job.submitted";
pub const TOPIC_ASSIGNED: &str = "job.assigned";
pub const TOPIC_STARTED: &str = "job.started";
pub const TOPIC_COMPLETED: &str = "job.completed";
pub const TOPIC_FAILED: &str = "job.failed";
pub const TOPIC_DEAD_LETTERED: &str = "job.dead-lettered";
pub const TOPIC_RETRIED: &str = "job.retried";
pub const TOPIC_WORKER_HEARTBEAT: &str = "worker.heartbeat";

/// Every topic jq publishes to (created at start when missing).
pub const ALL_TOPICS: [&str; 8] = [
    TOPIC_SUBMITTED,
    TOPIC_ASSIGNED,
    TOPIC_STARTED,
    TOPIC_COMPLETED,
    TOPIC_FAILED,
    TOPIC_DEAD_LETTERED,
    TOPIC_RETRIED,
    TOPIC_WORKER_HEARTBEAT,
];

/// The seed's six topics cover the states a consumer cares about most; a
/// claim and a re-queue get topics of their own so every transition has an
/// event (FR-036) without overloading `job.submitted` or `job.started`.
pub fn topic_for(step: &Step) -> &'static str {
    topic_of(step.from, step.to)
}

/// [`topic_for`] from an event's statuses alone: the relay derives the
/// topic of a `job_events` row, which stores no topic.
pub fn topic_of(from: Option<JobStatus>, to: JobStatus) -> &'static str {
    match (from, to) {
        (None, _) => TOPIC_SUBMITTED,
        (_, JobStatus::Pending) => TOPIC_RETRIED,
        (_, JobStatus::Assigned) => TOPIC_ASSIGNED,
        (_, JobStatus::Running) => TOPIC_STARTED,
        (_, JobStatus::Done) => TOPIC_COMPLETED,
        (_, JobStatus::Failed) => TOPIC_FAILED,
        (_, JobStatus::DeadLettered) => TOPIC_DEAD_LETTERED,
    }
}

/// The submission step every new job starts with.
pub fn submitted_step() -> Step {
    Step {
        from: None,
        to: JobStatus::Pending,
        reason: Reason::Submitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fr_036_every_allowed_transition_has_a_topic_and_seed_topics_are_used() {
        use crate::lifecycle::is_allowed;
        let froms = std::iter::once(None).chain(JobStatus::ALL.into_iter().map(Some));
        let mut used = std::collections::BTreeSet::new();
        for from in froms {
            for to in JobStatus::ALL {
                if is_allowed(from, to) {
                    let t = topic_for(&Step {
                        from,
                        to,
                        reason: Reason::Submitted,
                    });
                    assert!(ALL_TOPICS.contains(&t));
                    used.insert(t);
                }
            }
        }
        for seed in [
            TOPIC_SUBMITTED,
            TOPIC_STARTED,
            TOPIC_COMPLETED,
            TOPIC_FAILED,
            TOPIC_DEAD_LETTERED,
        ] {
            assert!(used.contains(seed), "{seed} never used");
        }
        assert_eq!(topic_for(&submitted_step()), TOPIC_SUBMITTED);
    }
}
