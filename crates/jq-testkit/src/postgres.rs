//! PostgreSQL for tests: one server per process (resolved once), one
//! migrated template per migration set, one database per test.

use std::time::Duration;

use jq_store::{MIGRATOR, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::Source;

/// The resolved server: an admin URL (a database we may CREATE DATABASE
/// from) and where it came from.
#[derive(Debug, Clone)]
pub struct PgServer {
    pub admin_url: String,
    pub source: Source,
}

static SERVER: OnceCell<PgServer> = OnceCell::const_new();
static CONTAINER: OnceCell<crate::docker::Running> = OnceCell::const_new();

const HOW_TO_FIX: &str = "no PostgreSQL for tests: set JQ_TEST_DATABASE_URL=postgres://user@host:port/db, \
     start a Docker daemon, or install the PostgreSQL server binaries (initdb, pg_ctl, postgres; \
     Debian: apt-get install postgresql)";

/// Resolve the PostgreSQL server for this process (see crate docs).
pub async fn server() -> &'static PgServer {
    SERVER
        .get_or_init(|| async {
            let s = resolve().await.unwrap_or_else(|e| panic!("jq-testkit: {e}"));
            eprintln!(
                "jq-testkit: PostgreSQL from {} ({})",
                s.source,
                redact(&s.admin_url)
            );
            s
        })
        .await
}

async fn resolve() -> Result<PgServer, String> {
    if let Ok(url) = std::env::var("JQ_TEST_DATABASE_URL")
        && !url.trim().is_empty()
    {
        return Ok(PgServer {
            admin_url: url,
            source: Source::Env,
        });
    }
    if crate::docker::daemon_answers() {
        let c = CONTAINER
            .get_or_try_init(crate::docker::postgres)
            .await
            .map_err(|e| format!("Docker answers but the PostgreSQL container failed: {e}"))?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", c.port);
        wait_connect(&url).await?;
        return Ok(PgServer {
            admin_url: url,
            source: Source::Container,
        });
    }
    let port = tokio::task::spawn_blocking(crate::local::postgres)
        .await
        .map_err(|e| e.to_string())??;
    match port {
        Some(port) => {
            let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
            wait_connect(&url).await?;
            Ok(PgServer {
                admin_url: url,
                source: Source::LocalBinary,
            })
        }
        None => Err(HOW_TO_FIX.to_string()),
    }
}

async fn wait_connect(url: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..100 {
        match PgConnection::connect(url).await {
            Ok(c) => {
                let _ = c.close().await;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("cannot connect to {}: {last}", redact(url)))
}

fn redact(url: &str) -> String {
    match url.parse::<PgConnectOptions>() {
        Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
        Err(_) => "<unparsable url>".into(),
    }
}

fn with_database(admin_url: &str, db: &str) -> Result<PgConnectOptions, String> {
    let o: PgConnectOptions = admin_url.parse().map_err(|e| format!("bad database url: {e}"))?;
    Ok(o.database(db).disable_statement_logging())
}

/// Name of the template for the current migrations: changes whenever a
/// migration does, so stale templates are never used.
fn template_name() -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for m in MIGRATOR.iter() {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    }
    // The template also holds the layout step's indexes.
    for (name, def, old) in jq_store::layout::PHASE_INDEXES {
        for b in [*name, *def, *old].concat().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    for (name, def) in jq_store::layout::ADDED_INDEXES {
        for b in [*name, *def].concat().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    format!("jq_tpl_{:012x}", h & 0xffff_ffff_ffff)
}

async fn ensure_template(server: &PgServer) -> Result<String, String> {
    let name = template_name();
    let mut admin = PgConnection::connect_with(&with_database(&server.admin_url, "postgres")?.clone())
        .await
        .or(PgConnection::connect(&server.admin_url).await)
        .map_err(|e| format!("connect: {e}"))?;
    // One process builds it; the others wait for the lock, then find it.
    let key: i64 = 0x6a71_7465_6d70; // "jqtemp"
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        if exists {
            return Ok(());
        }
        let building = format!("{name}_build");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(&format!("CREATE DATABASE {building}"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(with_database(&server.admin_url, &building)?)
                .await
                .map_err(|e| e.to_string())?;
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| format!("migrate template: {e}"))?;
            // The v5 indexes of `jobs`, as a new server's start makes them.
            let step = jq_store::Store::from_pool(pool.clone())
                .advance_layout()
                .await
                .map_err(|e| format!("layout of template: {e}"))?;
            if !step.complete {
                return Err(format!("layout of template incomplete: {step:?}"));
            }
            pool.close().await;
        }
        // Renamed only once complete: a crash mid-way leaves no half template.
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    result.map(|_| name)
}

/// A fresh, migrated database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
    pool: PgPool,
}

impl TestDb {
    /// Create the test's database from the migrated template.
    pub async fn new() -> TestDb {
        let server = server().await;
        let template = ensure_template(server)
            .await
            .unwrap_or_else(|e| panic!("jq-testkit: template: {e}"));
        let db = TestDb::create(server, &template).await;
        // The template's partitions are those of the day it was built,
        // as a server's start makes them for its own day.
        db.store()
            .ensure_event_partitions(jq_store::partitions::DEFAULT_WIDTH)
            .await
            .unwrap_or_else(|e| panic!("jq-testkit: partitions: {e}"));
        db
    }

    /// An empty database with no migrations applied (upgrade tests apply
    /// an older schema first).
    pub async fn blank() -> TestDb {
        TestDb::create(server().await, "template0").await
    }

    /// A database with only the migrations older than `version` applied,
    /// as a server of an earlier version left it (upgrade tests).
    pub async fn before(version: i64) -> TestDb {
        let db = TestDb::blank().await;
        let earlier = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR.iter().filter(|m| m.version < version).cloned().collect(),
            ),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        earlier
            .run(db.pool())
            .await
            .unwrap_or_else(|e| panic!("jq-testkit: migrations before {version}: {e}"));
        db
    }

    async fn create(server: &PgServer, template: &str) -> TestDb {
        let name = format!("jq_test_{}", crate::unique());
        let mut admin = PgConnection::connect(&server.admin_url)
            .await
            .unwrap_or_else(|e| panic!("jq-testkit: connect: {e}"));
        let mut tries = 0;
        loop {
            match sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .execute(&mut admin)
                .await
            {
                Ok(_) => break,
                // 55006: the template is briefly in use by another clone.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55006") && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("jq-testkit: create database: {e}"),
            }
        }
        let _ = admin.close().await;
        let opts = with_database(&server.admin_url, &name).unwrap();
        let url = opts.to_url_lossy().to_string();
        // As the server's connections (ADR 0012): JIT compiled the relay's
        // window read for a second per call on an empty table.
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts.options([("jit", "off")]))
            .await
            .unwrap_or_else(|e| panic!("jq-testkit: connect to {name}: {e}"));
        TestDb {
            name,
            url,
            admin_url: server.admin_url.clone(),
            pool,
        }
    }

    /// The URL of the server's maintenance database: another database
    /// than the test's, on the same server.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A pool on the test database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A store on the test database, with zero jitter so backoff is exact.
    pub fn store(&self) -> Store {
        Store::from_pool(self.pool.clone()).with_jitter(std::sync::Arc::new(|| 0.0))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime; do the async cleanup on a thread of
        // its own and wait for it, so databases do not pile up. The test's
        // pool is not touched here (its sockets belong to the blocked
        // runtime); WITH (FORCE) ends its connections server-side.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut c = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .ok()?;
                c.close().await.ok()
            })
        })
        .join();
    }
}
