//! Acks and results travel in batches (`AckJobs`, `ReportResults`): the
//! ones that queue up while a call is in flight go together in the next,
//! so a busy worker makes one round trip for many jobs instead of two per
//! job, and the server gets them as one group commit. A lone ack still
//! goes out at once. Each item keeps the answer its single call would
//! have had, so callers decide retries exactly as before. Against a server
//! without the batch calls (UNIMPLEMENTED) the worker falls back to one
//! call per item.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jq_client::Clients;
use jq_client::batch::Batcher;
use jq_proto::v1;
use tonic::{Code, Status};

/// Most items per batched call (the server takes up to 1000).
const MAX_BATCH: usize = 256;

type AckOut = Result<(), Status>;
type ReportOut = Result<v1::ReportResultResponse, Status>;

pub struct Calls {
    acks: Batcher<v1::AckJobRequest, AckOut>,
    reports: Batcher<v1::ReportResultRequest, ReportOut>,
}

/// A batch item's status as the single call's result.
fn item(s: Option<&v1::CallStatus>) -> Result<(), Status> {
    match s {
        Some(s) if s.code == Code::Ok as i32 => Ok(()),
        Some(s) => Err(Status::new(Code::from_i32(s.code), s.message.clone())),
        None => Err(Status::internal("the server's batch answer is missing an item")),
    }
}

/// One status for every item of a batch that failed as a whole.
fn all<T>(n: usize, e: &Status) -> Vec<Result<T, Status>> {
    (0..n).map(|_| Err(Status::new(e.code(), e.message()))).collect()
}

impl Calls {
    pub fn new(clients: &Clients) -> Calls {
        // Set once the server answers UNIMPLEMENTED to a batch call.
        let singles = Arc::new(AtomicBool::new(false));
        let (c, one_by_one) = (clients.workers.clone(), singles.clone());
        let acks = Batcher::spawn(1, MAX_BATCH, move |acks: Vec<v1::AckJobRequest>| {
            let (mut c, one_by_one) = (c.clone(), one_by_one.clone());
            async move {
                let n = acks.len();
                if !one_by_one.load(Ordering::Relaxed) {
                    let req = v1::AckJobsRequest { acks: acks.clone() };
                    match c.ack_jobs(req).await {
                        Ok(r) => {
                            let r = r.into_inner().results;
                            return (0..n).map(|i| item(r.get(i))).collect();
                        }
                        Err(e) if e.code() == Code::Unimplemented => {
                            one_by_one.store(true, Ordering::Relaxed)
                        }
                        Err(e) => return all(n, &e),
                    }
                }
                let calls = acks.into_iter().map(|a| {
                    let mut c = c.clone();
                    tokio::spawn(async move { c.ack_job(a).await.map(|_| ()) })
                });
                joined(calls.collect()).await
            }
        });
        let (c, one_by_one) = (clients.workers.clone(), singles);
        let reports = Batcher::spawn(1, MAX_BATCH, move |reports: Vec<v1::ReportResultRequest>| {
            let (mut c, one_by_one) = (c.clone(), one_by_one.clone());
            async move {
                let n = reports.len();
                if !one_by_one.load(Ordering::Relaxed) {
                    let req = v1::ReportResultsRequest {
                        reports: reports.clone(),
                    };
                    match c.report_results(req).await {
                        Ok(r) => {
                            let mut r = r.into_inner().results;
                            r.resize_with(n, Default::default);
                            return r
                                .into_iter()
                                .map(|i| item(i.status.as_ref()).map(|_| i.response.unwrap_or_default()))
                                .collect();
                        }
                        Err(e) if e.code() == Code::Unimplemented => {
                            one_by_one.store(true, Ordering::Relaxed)
                        }
                        Err(e) => return all(n, &e),
                    }
                }
                let calls = reports.into_iter().map(|r| {
                    let mut c = c.clone();
                    tokio::spawn(async move { c.report_result(r).await.map(|r| r.into_inner()) })
                });
                joined(calls.collect()).await
            }
        });
        Calls { acks, reports }
    }

    /// AckJob, batched with the acks queued meanwhile.
    pub async fn ack(&self, r: v1::AckJobRequest) -> AckOut {
        self.acks.call(r).await.unwrap_or_else(|| Err(stopped()))
    }

    /// ReportResult, batched with the results queued meanwhile.
    pub async fn report(&self, r: v1::ReportResultRequest) -> ReportOut {
        self.reports.call(r).await.unwrap_or_else(|| Err(stopped()))
    }
}

/// The single calls of the fallback, made concurrently, in order.
async fn joined<T>(calls: Vec<tokio::task::JoinHandle<Result<T, Status>>>) -> Vec<Result<T, Status>> {
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        out.push(c.await.unwrap_or_else(|e| Err(Status::internal(e.to_string()))));
    }
    out
}

fn stopped() -> Status {
    Status::unavailable("the worker's call batcher stopped")
}
