//! Harness for the black-box suites: the three real binaries as child
//! processes on free ports, an append-only execution log written by the
//! jobs themselves, and the checks every fault scenario ends with.
//!
//! Nothing here reaches into a server or worker: they are driven by
//! signals, by `jq-ctl`, and observed through PostgreSQL (read only, via
//! `jq-store`) and the jobs' own log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jq_core::JobStatus;
use jq_store::{Store, StoreOptions};
use jq_testkit::bins::binary;
use jq_testkit::free_port;
use tokio::process::{Child, Command};

/// Nanoseconds since the epoch (same clock as the jobs' `date +%s%N`).
pub fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn signal(child: &Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Where child processes write their logs (kept for a failing test).
pub fn log_dir() -> PathBuf {
    let d = std::env::temp_dir().join("jq-tests-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `jq-server` child process.
pub struct Server {
    pub name: String,
    pub grpc: u16,
    pub health: u16,
    pub metrics: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Server {
    /// Settings that make failure detection quick enough for a test.
    pub fn fast_env(db_url: &str) -> Vec<(String, String)> {
        [
            ("JQ_DB_URL", db_url),
            ("JQ_REDIS_URL", ""),
            ("JQ_SCHEDULER_INTERVAL_MS", "100"),
            ("JQ_SCHEDULER_REAPER_INTERVAL_MS", "200"),
            ("JQ_SCHEDULER_HEARTBEAT_INTERVAL_S", "1"),
            ("JQ_SCHEDULER_WORKER_HEARTBEAT_TIMEOUT_S", "4"),
            ("JQ_SCHEDULER_ASSIGNMENT_TIMEOUT_S", "10"),
            ("JQ_LOG_LEVEL", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub async fn start(name: &str, env: Vec<(String, String)>) -> Server {
        let mut s = Server {
            name: name.into(),
            grpc: free_port(),
            health: free_port(),
            metrics: free_port(),
            env,
            child: None,
            log: log_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple())),
        };
        // A free port can be taken by someone else (another test's private
        // PostgreSQL, say) before the server binds it: new ports, again.
        for _ in 0..5 {
            s.spawn_child();
            match s.try_ready().await {
                Ok(()) => return s,
                Err(log) if log.contains("Address already in use") => {
                    (s.grpc, s.health, s.metrics) = (free_port(), free_port(), free_port());
                    s.log = log_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("{} found no free ports in five tries", s.name);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    async fn spawn(&mut self) {
        self.spawn_child();
        self.wait_ready().await;
    }

    fn spawn_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary("jq-server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .env("JQ_SERVER_BIND", "127.0.0.1")
            .args(["--grpc-port", &self.grpc.to_string()])
            .args(["--health-port", &self.health.to_string()])
            .args(["--metrics-port", &self.metrics.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Until `/readyz` answers 200 (bounded).
    pub async fn wait_ready(&mut self) {
        if let Err(why) = self.try_ready().await {
            panic!("{why}");
        }
    }

    /// Until `/readyz` answers 200; why not, with the log, if it exits or
    /// never does.
    async fn try_ready(&mut self) -> Result<(), String> {
        for _ in 0..600 {
            if http_get(self.health, "/readyz").await.0 == 200 {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!(
                    "{} exited during start ({st}); log:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "{} never became ready; log:\n{}",
            self.name,
            self.log_tail()
        ))
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn kill9(&mut self) {
        if let Some(c) = &self.child {
            signal(c, libc::SIGKILL);
        }
    }

    /// SIGTERM and wait for the exit (bounded by `limit`); returns the exit
    /// status and how long it took.
    pub async fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let c = self.child.as_mut().expect("running");
        signal(c, libc::SIGTERM);
        let t0 = std::time::Instant::now();
        let st = tokio::time::timeout(limit, c.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?}", self.name))
            .unwrap();
        self.child = None;
        (st, t0.elapsed())
    }

    /// Start again on the same ports (after a kill or terminate).
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        self.spawn().await;
    }
}

/// A `jq-worker` child process.
pub struct Worker {
    pub id: String,
    server: String,
    concurrency: u32,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Worker {
    pub async fn start(server: &str, id: &str, concurrency: u32) -> Worker {
        Worker::start_with(server, id, concurrency, vec![]).await
    }

    pub async fn start_with(server: &str, id: &str, concurrency: u32, env: Vec<(String, String)>) -> Worker {
        let mut w = Worker {
            id: id.into(),
            server: server.into(),
            concurrency,
            env,
            child: None,
            log: log_dir().join(format!("{id}-{}.log", uuid::Uuid::new_v4().simple())),
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary("jq-worker"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JQ_WORKER_BIND", "127.0.0.1")
            .env("JQ_WORKER_RECONNECT_MIN_MS", "50")
            .env("JQ_WORKER_RECONNECT_MAX_MS", "1000")
            .env("JQ_EXEC_KILL_GRACE_S", "1")
            .envs(self.env.iter().cloned())
            .args(["--server-addr", &self.server, "--worker-id", &self.id])
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--metrics-port", "0", "--health-port", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(c) = &self.child {
            signal(c, libc::SIGKILL);
        }
    }

    /// SIGKILL and reap. A kill recorded after this is no earlier than any
    /// job start the worker's children logged: a child logs its start only
    /// while the worker lives (it dies with it, `PR_SET_PDEATHSIG`), and
    /// the time is taken before the line is written.
    pub async fn kill9_and_wait(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGKILL);
            let _ = c.wait().await;
        }
    }

    pub fn sigstop(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGSTOP);
    }

    pub fn sigcont(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGCONT);
    }

    pub async fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let c = self.child.as_mut().expect("running");
        signal(c, libc::SIGTERM);
        let t0 = std::time::Instant::now();
        let st = tokio::time::timeout(limit, c.wait())
            .await
            .unwrap_or_else(|_| panic!("worker {} did not exit within {limit:?}", self.id))
            .unwrap();
        self.child = None;
        (st, t0.elapsed())
    }

    /// True once the process has ended (killed, crashed, or exited).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }

    pub fn restart(&mut self) {
        self.child = None;
        self.spawn();
    }
}

/// What `jq-ctl` printed and its exit code.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "jq-ctl failed: {}", self.stderr);
        self
    }
}

/// Run `jq-ctl --server-addr addr args…`.
pub async fn ctl(addr: &str, args: &[&str]) -> Out {
    let o = Command::new(binary("jq-ctl"))
        .args(["--server-addr", addr])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("JQ_SERVER_ADDR")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Plain HTTP GET on 127.0.0.1; (0, "") when nothing answers.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .is_err()
    {
        return (0, String::new());
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// The jobs' own append-only record of every execution.
pub struct ExecLog {
    dir: tempfile::TempDir,
}

/// One execution of one attempt, as the job itself logged it.
#[derive(Debug, Clone)]
pub struct Exec {
    pub job: String,
    pub attempt: u32,
    pub worker: String,
    pub start: u128,
    /// None when the process died before finishing (killed with its worker).
    pub end: Option<u128>,
}

impl Default for ExecLog {
    fn default() -> Self {
        ExecLog::new()
    }
}

impl ExecLog {
    pub fn new() -> ExecLog {
        ExecLog {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("executions.log")
    }

    /// A subprocess payload that logs its start, works `ms`, logs its end.
    /// Each line is one small O_APPEND write, so lines never interleave.
    pub fn payload(&self, ms: u64) -> serde_json::Value {
        let p = self.path();
        // A run the worker stops (SIGTERM to the job's group: cancel, timeout,
        // its own fence) logs when it ended too.
        let end = format!(
            "echo \"E $JQ_JOB_ID $JQ_JOB_ATTEMPT $JQ_WORKER_ID $(date +%s%N)\" >> {}",
            p.display()
        );
        let script = format!(
            "trap '{end}; exit 143' TERM; \
             echo \"S $JQ_JOB_ID $JQ_JOB_ATTEMPT $JQ_WORKER_ID $(date +%s%N)\" >> {p}; sleep {s}; {end}",
            p = p.display(),
            s = ms as f64 / 1000.0
        );
        serde_json::json!({"command": ["sh", "-c", script]})
    }

    /// A payload that kills the worker running it, every time (JQ-112).
    pub fn poison(&self) -> serde_json::Value {
        let p = self.path();
        let script = format!(
            "echo \"S $JQ_JOB_ID $JQ_JOB_ATTEMPT $JQ_WORKER_ID $(date +%s%N)\" >> {p}; kill -9 $PPID",
            p = p.display()
        );
        serde_json::json!({"command": ["sh", "-c", script]})
    }

    pub fn read(&self) -> Vec<Exec> {
        let text = std::fs::read_to_string(self.path()).unwrap_or_default();
        let mut open: HashMap<(String, u32, String), Exec> = HashMap::new();
        let mut done = vec![];
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // A start whose `date` the worker's SIGTERM killed has no time:
            // the run began then ended at once, at its end line's time.
            let (kind, job, attempt, worker, ns) = match f[..] {
                [kind, job, attempt, worker, ns] => (kind, job, attempt, worker, Some(ns)),
                ["S", job, attempt, worker] => ("S", job, attempt, worker, None),
                _ => panic!("bad execution log line {line:?}"),
            };
            let key = (job.to_string(), attempt.parse().unwrap(), worker.to_string());
            let ns: u128 = ns.map_or(u128::MAX, |n| n.parse().unwrap());
            match kind {
                "S" => {
                    if let Some(prev) = open.insert(
                        key.clone(),
                        Exec {
                            job: key.0.clone(),
                            attempt: key.1,
                            worker: key.2.clone(),
                            start: ns,
                            end: None,
                        },
                    ) {
                        done.push(prev);
                    }
                }
                "E" => {
                    let mut e = open
                        .remove(&key)
                        .unwrap_or_else(|| panic!("end without start: {line}"));
                    if e.start == u128::MAX {
                        e.start = ns;
                    }
                    e.end = Some(ns);
                    done.push(e);
                }
                _ => panic!("bad execution log line {line:?}"),
            }
        }
        done.extend(open.into_values());
        done
    }
}

/// Write `n` payloads as NDJSON and submit them with `jq-ctl job submit
/// --file`; returns the ids.
pub async fn submit_many(
    addr: &str,
    payloads: &[serde_json::Value],
    extra: serde_json::Value,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.ndjson");
    let text: String = payloads
        .iter()
        .map(|p| {
            let mut line = extra.clone();
            line["payload"] = p.clone();
            line.to_string() + "\n"
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let o = ctl(addr, &["job", "submit", "--file", file.to_str().unwrap()])
        .await
        .ok();
    o.stdout.lines().map(String::from).collect()
}

pub async fn store(db_url: &str) -> Store {
    Store::connect(db_url, &StoreOptions::default()).await.unwrap()
}

/// Jobs per status over all queues.
pub async fn counts(s: &Store) -> HashMap<JobStatus, u64> {
    let mut m = HashMap::new();
    for q in s.list_queues().await.unwrap_or_default() {
        let Ok(st) = s.queue_stats(&q.name).await else {
            continue;
        };
        for (status, n) in [
            (JobStatus::Pending, st.pending),
            (JobStatus::Assigned, st.assigned),
            (JobStatus::Running, st.running),
            (JobStatus::Done, st.done),
            (JobStatus::Failed, st.failed),
            (JobStatus::DeadLettered, st.dead_lettered),
        ] {
            *m.entry(status).or_default() += n;
        }
    }
    m
}

/// Wait (bounded) until no job is PENDING, ASSIGNED, RUNNING or FAILED.
pub async fn wait_all_terminal(s: &Store, limit: Duration) -> HashMap<JobStatus, u64> {
    let t0 = std::time::Instant::now();
    loop {
        let c = counts(s).await;
        let open: u64 = [
            JobStatus::Pending,
            JobStatus::Assigned,
            JobStatus::Running,
            JobStatus::Failed,
        ]
        .iter()
        .map(|st| c.get(st).copied().unwrap_or(0))
        .sum();
        if open == 0 && c.values().sum::<u64>() > 0 {
            return c;
        }
        if t0.elapsed() > limit {
            panic!("jobs still open after {limit:?}: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When each worker was SIGKILLed, for executions that never logged their
/// end (their process died with the worker).
#[derive(Debug, Default, Clone)]
pub struct Kills(pub Vec<(String, u128)>);

impl Kills {
    pub fn record(&mut self, worker: &str) {
        self.0.push((worker.to_string(), now_ns()));
    }

    fn end_of(&self, e: &Exec) -> u128 {
        e.end.unwrap_or_else(|| {
            self.0
                .iter()
                .filter(|(w, t)| *w == e.worker && *t >= e.start)
                .map(|(_, t)| *t)
                .min()
                .unwrap_or_else(|| panic!("execution {e:?} has no end and its worker was not killed"))
        })
    }
}

/// What a scenario ended with, for the report table.
#[derive(Debug)]
pub struct Verdict {
    pub submitted: usize,
    pub done: u64,
    pub dead: u64,
    pub executions: usize,
    pub reruns: usize,
    pub transitions: u64,
    /// Why attempts were lost or failed (reason of each -> FAILED event).
    pub failures: std::collections::BTreeMap<String, usize>,
}

/// The properties every scenario must end with:
/// - every job terminal, DONE = submitted - expected dead letters;
/// - no two executions of one job overlap in time;
/// - every job ran at least once and its last attempt is the one recorded;
/// - every transition has exactly one outbox event.
pub async fn check(s: &Store, log: &ExecLog, kills: &Kills, ids: &[String], expect_dead: u64) -> Verdict {
    let c = wait_all_terminal(s, Duration::from_secs(120)).await;
    let done = c.get(&JobStatus::Done).copied().unwrap_or(0);
    let dead = c.get(&JobStatus::DeadLettered).copied().unwrap_or(0);
    assert_eq!(done + dead, ids.len() as u64, "{c:?}");
    assert_eq!(done, ids.len() as u64 - expect_dead, "{c:?}");
    let execs = log.read();
    let mut by_job: HashMap<&str, Vec<&Exec>> = HashMap::new();
    for e in &execs {
        by_job.entry(&e.job).or_default().push(e);
    }
    let mut failures = std::collections::BTreeMap::new();
    for id in ids {
        for e in s.job_events(id.parse().unwrap()).await.unwrap() {
            if e.to == JobStatus::Failed {
                *failures.entry(e.reason.clone()).or_insert(0) += 1;
            }
        }
        let runs = by_job
            .get_mut(id.as_str())
            .unwrap_or_else(|| panic!("job {id} never ran"));
        runs.sort_by_key(|e| e.start);
        for w in runs.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(
                kills.end_of(a) <= b.start,
                "job {id}: attempt {} on {} overlaps attempt {} on {}",
                a.attempt,
                a.worker,
                b.attempt,
                b.worker
            );
            assert!(a.attempt < b.attempt, "job {id}: attempt {} ran twice", a.attempt);
        }
        let job = s.get_job(uuid::Uuid::parse_str(id).unwrap()).await.unwrap();
        if job.status == JobStatus::Done {
            let last = runs.last().unwrap();
            assert_eq!(last.attempt, job.attempt, "job {id}: DONE by its last attempt");
            let events = s.job_events(job.id).await.unwrap();
            let completed = events.iter().filter(|e| e.to == JobStatus::Done).count();
            assert_eq!(completed, 1, "job {id} completed once: {events:?}");
        }
    }
    let audit = s.audit_events().await.unwrap();
    assert_eq!(
        (audit.missing, audit.duplicated, audit.orphans),
        (0, 0, 0),
        "{audit:?}"
    );
    Verdict {
        submitted: ids.len(),
        done,
        dead,
        executions: execs.len(),
        reruns: execs.len() - by_job.len(),
        transitions: audit.transitions,
        failures,
    }
}

/// Wait (bounded) until `f` holds.
pub async fn until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = std::time::Instant::now();
    while !f().await {
        if t0.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of a log file that contain `needle`.
pub fn grep(path: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}
