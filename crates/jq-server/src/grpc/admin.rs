//! AdminService (SPEC §6, FR-023/024, FR-042).

use std::sync::Arc;
use std::time::Duration;

use jq_core::submit::Retention;
use jq_core::weights::PriorityWeights;
use jq_core::{BackoffPolicy, QueueSettings};
use jq_proto::v1::admin_service_server::AdminService;
use jq_proto::v1::{self, *};
use jq_store::WorkerListing;
use jq_store::queues::QueuePatch;
use tonic::{Request, Response, Status};

use crate::grpc::control;
use crate::status::from_store;
use crate::{Shared, VERSION, convert};

pub struct Admin(pub Arc<Shared>);

impl Admin {
    async fn set_paused(&self, name: String, paused: bool) -> Result<Response<ScheduleResponse>, Status> {
        let rec = self
            .0
            .store
            .set_schedule_paused(&name, paused)
            .await
            .map_err(from_store)?;
        tracing::info!(schedule = %name, paused, "schedule paused or resumed");
        Ok(Response::new(ScheduleResponse {
            schedule: Some(convert::schedule(rec)),
        }))
    }
}

fn opt_secs(v: u32) -> Option<Duration> {
    (v > 0).then(|| Duration::from_secs(u64::from(v)))
}

fn patch(s: Option<v1::QueueSettings>) -> Result<QueuePatch, Status> {
    let s = s.unwrap_or_default();
    let retention = |field: &str, v: Option<i64>| {
        v.map(Retention::from_seconds).transpose().map_err(|_| {
            Status::invalid_argument(format!(
                "{field}: -1 (the server's default), 0 (keep until deleted) or a number of seconds"
            ))
        })
    };
    let priority_weights = match s.priority_weights.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(text) => Some(Some(
            PriorityWeights::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))?,
        )),
    };
    Ok(QueuePatch {
        priority_weights,
        retain_done: retention("retain_done_seconds", s.retain_done_seconds)?,
        retain_dead: retention("retain_dead_seconds", s.retain_dead_seconds)?,
        max_retries: s.max_retries,
        default_ttl: s.default_ttl_seconds.map(opt_secs),
        default_timeout: s.default_timeout_seconds.map(opt_secs),
        backoff_base: s.backoff_base_ms.map(|v| Duration::from_millis(u64::from(v))),
        backoff_max: s.backoff_max_ms.map(|v| Duration::from_millis(u64::from(v))),
        concurrency_limit: s.concurrency_limit.map(|v| (v > 0).then_some(v)),
        rate_limit_per_second: s.rate_limit_per_second.map(|v| (v != 0.0).then_some(v)),
    })
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_queue(
        &self,
        req: Request<CreateQueueRequest>,
    ) -> Result<Response<CreateQueueResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        let rc = &s.cfg.retry;
        let defaults = QueueSettings {
            max_retries: rc.default_max_retries,
            backoff: BackoffPolicy {
                base: Duration::from_millis(rc.backoff_base_ms),
                max: Duration::from_millis(rc.backoff_max_ms),
            },
            ..QueueSettings::default()
        };
        let settings = patch(r.settings)?.apply(&defaults);
        let q = s
            .store
            .create_queue(&r.name, &settings)
            .await
            .map_err(from_store)?;
        tracing::info!(queue = %q.name, "queue created");
        Ok(Response::new(CreateQueueResponse {
            queue: Some(convert::queue(q)),
        }))
    }

    async fn update_queue(
        &self,
        req: Request<UpdateQueueRequest>,
    ) -> Result<Response<UpdateQueueResponse>, Status> {
        let r = req.into_inner();
        let q = self
            .0
            .store
            .update_queue(&r.name, &patch(r.settings)?)
            .await
            .map_err(from_store)?;
        Ok(Response::new(UpdateQueueResponse {
            queue: Some(convert::queue(q)),
        }))
    }

    async fn delete_queue(
        &self,
        req: Request<DeleteQueueRequest>,
    ) -> Result<Response<DeleteQueueResponse>, Status> {
        let r = req.into_inner();
        let n = self
            .0
            .store
            .delete_queue(&r.name, r.force)
            .await
            .map_err(from_store)?;
        tracing::info!(queue = %r.name, deleted_jobs = n, "queue deleted");
        Ok(Response::new(DeleteQueueResponse { deleted_jobs: n }))
    }

    async fn get_queue(&self, req: Request<GetQueueRequest>) -> Result<Response<GetQueueResponse>, Status> {
        let q = self
            .0
            .store
            .get_queue(&req.into_inner().name)
            .await
            .map_err(from_store)?;
        Ok(Response::new(GetQueueResponse {
            queue: Some(convert::queue(q)),
        }))
    }

    async fn list_queues(
        &self,
        _req: Request<ListQueuesRequest>,
    ) -> Result<Response<ListQueuesResponse>, Status> {
        let qs = self.0.store.list_queues().await.map_err(from_store)?;
        Ok(Response::new(ListQueuesResponse {
            queues: qs.into_iter().map(convert::queue).collect(),
        }))
    }

    async fn get_queue_stats(
        &self,
        req: Request<GetQueueStatsRequest>,
    ) -> Result<Response<GetQueueStatsResponse>, Status> {
        let st = self
            .0
            .store
            .queue_stats(&req.into_inner().name)
            .await
            .map_err(from_store)?;
        Ok(Response::new(GetQueueStatsResponse {
            stats: Some(convert::stats(st)),
        }))
    }

    async fn pause_queue(
        &self,
        req: Request<PauseQueueRequest>,
    ) -> Result<Response<PauseQueueResponse>, Status> {
        let q = self
            .0
            .store
            .pause_queue(&req.into_inner().name)
            .await
            .map_err(from_store)?;
        tracing::info!(queue = %q.name, "queue paused");
        Ok(Response::new(PauseQueueResponse {
            queue: Some(convert::queue(q)),
        }))
    }

    async fn resume_queue(
        &self,
        req: Request<ResumeQueueRequest>,
    ) -> Result<Response<ResumeQueueResponse>, Status> {
        let s = &self.0;
        let q = s
            .store
            .resume_queue(&req.into_inner().name)
            .await
            .map_err(from_store)?;
        s.submitted();
        tracing::info!(queue = %q.name, "queue resumed");
        Ok(Response::new(ResumeQueueResponse {
            queue: Some(convert::queue(q)),
        }))
    }

    async fn list_workers(
        &self,
        req: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        let ws = self
            .0
            .store
            .list_workers(if req.into_inner().include_offline {
                WorkerListing::WithOffline
            } else {
                WorkerListing::Live
            })
            .await
            .map_err(from_store)?;
        Ok(Response::new(ListWorkersResponse {
            workers: ws.into_iter().map(convert::worker).collect(),
        }))
    }

    async fn drain_worker(
        &self,
        req: Request<DrainWorkerRequest>,
    ) -> Result<Response<DrainWorkerResponse>, Status> {
        let s = &self.0;
        let id = req.into_inner().worker_id;
        let w = s.store.drain_worker(&id).await.map_err(from_store)?;
        // Also told in its next heartbeat answer (status DRAINING).
        s.registry
            .send(&id, control(v1::server_message::Kind::Drain(v1::Drain {})));
        tracing::info!(worker_id = %id, "worker draining");
        Ok(Response::new(DrainWorkerResponse {
            worker: Some(convert::worker(w)),
        }))
    }

    async fn shutdown_worker(
        &self,
        req: Request<ShutdownWorkerRequest>,
    ) -> Result<Response<ShutdownWorkerResponse>, Status> {
        let s = &self.0;
        let id = req.into_inner().worker_id;
        let w = s.store.shutdown_worker(&id).await.map_err(from_store)?;
        s.registry
            .send(&id, control(v1::server_message::Kind::Shutdown(v1::Shutdown {})));
        tracing::info!(worker_id = %id, "worker asked to shut down");
        Ok(Response::new(ShutdownWorkerResponse {
            worker: Some(convert::worker(w)),
        }))
    }

    async fn create_schedule(
        &self,
        req: Request<CreateScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        let base = jq_core::cron::ScheduleRequest {
            name: r.name,
            queue: "default".into(),
            ..Default::default()
        };
        let want = convert::schedule_patch(r.spec).apply(base);
        let rec = s
            .store
            .create_schedule(want, s.cfg.server.max_payload_bytes as usize)
            .await
            .map_err(from_store)?;
        tracing::info!(schedule = %rec.def.name, cron = rec.def.spec.expr(), timezone = rec.def.spec.timezone(), "schedule created");
        Ok(Response::new(ScheduleResponse {
            schedule: Some(convert::schedule(rec)),
        }))
    }

    async fn update_schedule(
        &self,
        req: Request<UpdateScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        let rec = s
            .store
            .update_schedule(
                &r.name,
                &convert::schedule_patch(r.spec),
                s.cfg.server.max_payload_bytes as usize,
            )
            .await
            .map_err(from_store)?;
        Ok(Response::new(ScheduleResponse {
            schedule: Some(convert::schedule(rec)),
        }))
    }

    async fn get_schedule(&self, req: Request<ScheduleRef>) -> Result<Response<ScheduleResponse>, Status> {
        let rec = self
            .0
            .store
            .get_schedule(&req.into_inner().name)
            .await
            .map_err(from_store)?;
        Ok(Response::new(ScheduleResponse {
            schedule: Some(convert::schedule(rec)),
        }))
    }

    async fn list_schedules(
        &self,
        _req: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let all = self.0.store.list_schedules().await.map_err(from_store)?;
        Ok(Response::new(ListSchedulesResponse {
            schedules: all.into_iter().map(convert::schedule).collect(),
        }))
    }

    async fn pause_schedule(&self, req: Request<ScheduleRef>) -> Result<Response<ScheduleResponse>, Status> {
        self.set_paused(req.into_inner().name, true).await
    }

    async fn resume_schedule(&self, req: Request<ScheduleRef>) -> Result<Response<ScheduleResponse>, Status> {
        self.set_paused(req.into_inner().name, false).await
    }

    async fn delete_schedule(
        &self,
        req: Request<ScheduleRef>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let name = req.into_inner().name;
        self.0.store.delete_schedule(&name).await.map_err(from_store)?;
        tracing::info!(schedule = %name, "schedule deleted");
        Ok(Response::new(DeleteScheduleResponse {}))
    }

    async fn trigger_schedule(
        &self,
        req: Request<ScheduleRef>,
    ) -> Result<Response<TriggerScheduleResponse>, Status> {
        let s = &self.0;
        let name = req.into_inner().name;
        let (at, id) = s.store.trigger_schedule(&name).await.map_err(from_store)?;
        s.metrics.schedule_fires.with_label_values(&[&name]).inc();
        s.registry.wake();
        tracing::info!(schedule = %name, job_id = %id, "schedule triggered");
        Ok(Response::new(TriggerScheduleResponse {
            job_id: id.to_string(),
            occurrence: Some(jq_proto::timestamp(at)),
        }))
    }

    async fn get_system_status(
        &self,
        _req: Request<GetSystemStatusRequest>,
    ) -> Result<Response<GetSystemStatusResponse>, Status> {
        let s = &self.0;
        let mut components = vec![];
        let db = s.store.server_version().await;
        components.push(ComponentHealth {
            name: "database".into(),
            state: if db.is_ok() { "ok" } else { "down" }.into(),
            detail: match db {
                Ok(v) => format!("PostgreSQL {v}"),
                Err(e) => e.to_string(),
            },
        });
        components.push(s.redis_health().await);
        // Kafka down is not an outage of jq: events wait in the outbox.
        let (state, detail) = match crate::dry_run::check_kafka(&s.cfg).await {
            crate::dry_run::Check::Ok(d) => ("ok", d),
            crate::dry_run::Check::Disabled(d) => ("disabled", d),
            crate::dry_run::Check::Failed(d) => ("degraded", format!("{d}; events wait in the outbox")),
        };
        components.push(ComponentHealth {
            name: "kafka".into(),
            state: state.into(),
            detail,
        });
        components.push(s.transactions_health().await);
        let (state, detail) = crate::posture::of(&s.cfg).component(&s.cfg.server.bind);
        components.push(ComponentHealth {
            name: "security".into(),
            state: state.into(),
            detail,
        });
        let workers = s
            .store
            .list_workers(WorkerListing::Live)
            .await
            .map_err(from_store)?;
        let mut queues = vec![];
        for q in s.store.list_queues().await.map_err(from_store)? {
            queues.push(convert::stats(
                s.store.queue_stats(&q.name).await.map_err(from_store)?,
            ));
        }
        let outbox = s.store.outbox_pending(s.publishing()).await.map_err(from_store)?;
        Ok(Response::new(GetSystemStatusResponse {
            server_version: VERSION.to_string(),
            components,
            active_workers: workers.len() as u32,
            queues,
            outbox_backlog: outbox.events,
            outbox_lag_seconds: outbox.lag.as_secs_f64(),
        }))
    }
}
