//! `jq-server --dev`: the whole system in one command on a fresh machine.
//! A private PostgreSQL from the local binaries in a data folder this mode
//! owns, no Redis and no Kafka (single instance; events wait in the
//! outbox), and a worker in the same process. Not for production: one
//! process, one database cluster, trust authentication on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(
        "--dev needs the PostgreSQL server binaries (initdb, pg_ctl) and found none on PATH or in \
         /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: apt-get install postgresql; macOS: \
         brew install postgresql@16; nix: nix develop), or point jq at a database with JQ_DB_URL"
    )]
    NoPostgres,
    #[error("--dev runs as root and needs an unprivileged user to run PostgreSQL as (postgres or nobody)")]
    NoUser,
    #[error("{what} failed: {detail}")]
    Step { what: String, detail: String },
}

fn step(what: &str, detail: impl std::fmt::Display) -> DevError {
    DevError::Step {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// Find a PostgreSQL binary: only in `JQ_DEV_PG_BINDIR` when set (to pick
/// a version), else on PATH or in the usual install folders.
pub fn find_pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("JQ_DEV_PG_BINDIR") {
        let p = PathBuf::from(dir).join(name);
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
        v.sort();
        v.reverse();
        dirs.extend(v);
    }
    dirs.extend(["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster in `dir`, started by this process.
pub struct DevPostgres {
    pub port: u16,
    data: PathBuf,
    pg_ctl: PathBuf,
    user: Option<String>,
    pub initialized: bool,
}

impl DevPostgres {
    /// Create the cluster on first use, then start it on `port`.
    pub fn start(dir: &Path, port: u16) -> Result<DevPostgres, DevError> {
        let initdb = find_pg_binary("initdb").ok_or(DevError::NoPostgres)?;
        let pg_ctl = find_pg_binary("pg_ctl").ok_or(DevError::NoPostgres)?;
        // PostgreSQL refuses to run as root.
        let user = if is_root() {
            let u = ["postgres", "nobody"]
                .into_iter()
                .find(|u| {
                    Command::new("id")
                        .arg(u)
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .ok_or(DevError::NoUser)?;
            Some(u.to_string())
        } else {
            None
        };
        let dir = std::path::absolute(dir).map_err(|e| step("locating the data folder", e))?;
        let data = dir.join("postgres");
        std::fs::create_dir_all(&data).map_err(|e| step(&format!("creating {}", data.display()), e))?;
        let pg = DevPostgres {
            port,
            data,
            pg_ctl,
            user,
            initialized: false,
        };
        if let Some(u) = &pg.user {
            exec(
                Command::new("chown").arg("-R").arg(u).arg(&dir),
                "chown of the data folder",
            )?;
        }
        let mut pg = pg;
        if !pg.data.join("PG_VERSION").exists() {
            let mut c = pg.command(&initdb);
            c.arg("-D")
                .arg(&pg.data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]);
            exec(&mut c, "initdb")?;
            pg.initialized = true;
        }
        // A cluster left running by a previous --dev that died: stop it.
        let _ = pg.ctl(&["-m", "fast", "stop"]);
        let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", pg.data.display());
        let log = pg.data.join("postgres.log");
        let mut c = pg.command(&pg.pg_ctl);
        c.arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&opts)
            .args(["-w", "-t", "60", "start"]);
        exec(&mut c, "pg_ctl start").map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(3).collect();
            step(&e.to_string(), last.join(" | "))
        })?;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(step(
                    "PostgreSQL start",
                    format!("nothing listens on port {port}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, bin: &Path) -> Command {
        match &self.user {
            None => Command::new(bin),
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(bin);
                c
            }
        }
    }

    fn ctl(&self, args: &[&str]) -> Result<(), DevError> {
        let mut c = self.command(&self.pg_ctl);
        c.arg("-D").arg(&self.data).args(args);
        exec(&mut c, "pg_ctl")
    }

    /// Fast shutdown of the cluster.
    pub fn stop(&self) {
        if let Err(e) = self.ctl(&["-m", "fast", "-w", "stop"]) {
            tracing::warn!(error = %e, "stopping the dev PostgreSQL");
        }
    }
}

fn exec(c: &mut Command, what: &str) -> Result<(), DevError> {
    let out = c.output().map_err(|e| step(what, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(step(what, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Run the dev system until `shutdown` resolves: the private PostgreSQL
/// (unless `db_given`), the server without Redis and Kafka, and one worker
/// in this process (ADR 0007). Prints how to use it.
pub async fn run(
    mut cfg: jq_config::ServerConfig,
    data_dir: &Path,
    db_given: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DevError> {
    #[cfg(not(feature = "dev"))]
    {
        let _ = (&mut cfg, data_dir, db_given, shutdown);
        Err(step(
            "--dev",
            "this build has no dev mode (built without the \"dev\" feature)",
        ))
    }
    #[cfg(feature = "dev")]
    {
        let pg = if db_given {
            None
        } else {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| step("choosing a port for PostgreSQL", e))?;
            let dir = data_dir.to_path_buf();
            let pg = tokio::task::spawn_blocking(move || DevPostgres::start(&dir, port))
                .await
                .map_err(|e| step("starting PostgreSQL", e))??;
            Some(pg)
        };
        if let Some(pg) = &pg {
            cfg.db.url = pg.url();
        }
        cfg.redis.url = String::new();
        cfg.kafka.brokers = String::new();
        let result = serve(cfg, data_dir, pg.as_ref(), shutdown).await;
        if let Some(pg) = pg {
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
        result
    }
}

#[cfg(feature = "dev")]
async fn serve(
    cfg: jq_config::ServerConfig,
    data_dir: &Path,
    pg: Option<&DevPostgres>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DevError> {
    let running = crate::start(cfg)
        .await
        .map_err(|e| step("starting the server", e))?;
    let mut wc = jq_config::WorkerConfig::default();
    wc.worker.server_addr = format!("127.0.0.1:{}", running.grpc_addr.port());
    wc.worker.id = "dev-worker".into();
    wc.worker.bind = "127.0.0.1".into();
    wc.worker.health_port = 0;
    wc.worker.metrics_port = 0;
    let worker = match jq_worker::start(wc.clone(), jq_worker::Handlers::builtin()).await {
        Ok(w) => w,
        Err(e) => {
            running.shutdown().await;
            return Err(step("starting the worker", e));
        }
    };
    let db = match pg {
        Some(pg) => format!(
            "private PostgreSQL in {} (port {}{})",
            data_dir.display(),
            pg.port,
            if pg.initialized { ", created now" } else { "" }
        ),
        None => "the database in JQ_DB_URL".into(),
    };
    let addr = running.grpc_addr;
    let ctl = if addr.port() == 50051 {
        "jq-ctl".to_string()
    } else {
        format!("jq-ctl --server-addr 127.0.0.1:{}", addr.port())
    };
    println!(
        "jq {} running in dev mode (one process; not for production)\n\
         \x20 database  {db}\n\
         \x20 server    gRPC {addr}, /healthz /readyz on {}, /metrics on {}\n\
         \x20 worker    {} ({} slots, queue {}), /metrics on {}\n\
         \x20 redis, kafka: off (single instance; events kept in the outbox)\n\n\
         Try, in another terminal (cargo run -p jq-ctl -- … from a checkout):\n\
         \x20 {ctl} job submit '{{\"command\":[\"echo\",\"hi\"]}}'\n\
         \x20 {ctl} job status <id>\n\
         \x20 {ctl} status\n\n\
         Ctrl-C stops everything.",
        crate::VERSION,
        running.health_addr,
        running.metrics_addr,
        worker.worker_id,
        wc.worker.concurrency,
        wc.worker.queues.join(","),
        worker.metrics_addr,
    );
    shutdown.await;
    worker.shutdown().await;
    running.shutdown().await;
    Ok(())
}
