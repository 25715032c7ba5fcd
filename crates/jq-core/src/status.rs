//! Job and worker states with their stable text forms (stored in PostgreSQL
//! enums and shown to operators, so the spelling is part of the contract).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// Lifecycle state of a job (FR-009): exactly one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    Pending,
    Assigned,
    Running,
    Done,
    Failed,
    DeadLettered,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Assigned,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Assigned => "ASSIGNED",
            JobStatus::Running => "RUNNING",
            JobStatus::Done => "DONE",
            JobStatus::Failed => "FAILED",
            JobStatus::DeadLettered => "DEAD_LETTERED",
        }
    }

    /// DONE and DEAD_LETTERED: nothing happens to the job unless an operator
    /// retries (dead letters) or deletes it.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::DeadLettered)
    }

    /// ASSIGNED or RUNNING: a worker holds a lease on the job.
    pub fn is_in_flight(self) -> bool {
        matches!(self, JobStatus::Assigned | JobStatus::Running)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase().replace('-', "_");
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == up)
            .ok_or_else(|| {
                ParseError::new(
                    "job status",
                    s,
                    "PENDING, ASSIGNED, RUNNING, DONE, FAILED, DEAD_LETTERED",
                )
            })
    }
}

/// State of a registered worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerStatus {
    /// Heartbeating and taking jobs.
    Online,
    /// Finishing running jobs, taking no new ones (FR-023).
    Draining,
    /// Finishing running jobs, then exiting (FR-024).
    Stopping,
    /// Deregistered or heartbeat timed out (FR-020).
    Offline,
}

impl WorkerStatus {
    pub const ALL: [WorkerStatus; 4] = [
        WorkerStatus::Online,
        WorkerStatus::Draining,
        WorkerStatus::Stopping,
        WorkerStatus::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Online => "ONLINE",
            WorkerStatus::Draining => "DRAINING",
            WorkerStatus::Stopping => "STOPPING",
            WorkerStatus::Offline => "OFFLINE",
        }
    }

    /// Only an ONLINE worker is offered new jobs.
    pub fn takes_new_jobs(self) -> bool {
        self == WorkerStatus::Online
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        WorkerStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == up)
            .ok_or_else(|| ParseError::new("worker status", s, "ONLINE, DRAINING, STOPPING, OFFLINE"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fr_009_every_status_round_trips_through_text() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
        }
        assert_eq!(
            "dead-lettered".parse::<JobStatus>().unwrap(),
            JobStatus::DeadLettered
        );
        let err = "SLEEPING".parse::<JobStatus>().unwrap_err().to_string();
        assert!(err.contains("SLEEPING") && err.contains("PENDING"), "{err}");
    }

    #[test]
    fn fr_009_terminal_and_in_flight_sets() {
        let terminal: Vec<_> = JobStatus::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, vec![JobStatus::Done, JobStatus::DeadLettered]);
        let in_flight: Vec<_> = JobStatus::ALL.into_iter().filter(|s| s.is_in_flight()).collect();
        assert_eq!(in_flight, vec![JobStatus::Assigned, JobStatus::Running]);
    }

    #[test]
    fn worker_status_round_trips_and_only_online_takes_jobs() {
        for st in WorkerStatus::ALL {
            assert_eq!(st.as_str().parse::<WorkerStatus>().unwrap(), st);
            assert_eq!(st.takes_new_jobs(), st == WorkerStatus::Online);
        }
        assert!("BUSY".parse::<WorkerStatus>().is_err());
    }
}
