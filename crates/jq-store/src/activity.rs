//! What else runs on the PostgreSQL server: the transactions that hold
//! its horizon back. A transaction open anywhere on the server (any
//! database) keeps vacuum from removing the rows that died after it
//! began, so jq's hot tables fill with dead rows and every index scan of
//! the claim walks them. The server warns about the old ones by name.

use std::time::Duration;

use crate::{Result, Store};

/// An open transaction that holds the server's horizon back.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTransaction {
    /// Its backend's process id; `None` for a prepared transaction.
    pub pid: Option<i32>,
    pub database: Option<String>,
    /// `application_name`, or `prepared transaction <gid>`.
    pub application: String,
    /// `active`, `idle in transaction`, `prepared`, …
    pub state: String,
    /// Since the transaction began.
    pub age: Duration,
    /// It has written (it has a transaction id), not only read.
    pub wrote: bool,
}

/// pid, database, application, state, age in seconds, wrote.
type Row = (Option<i32>, Option<String>, String, String, f64, bool);

impl Store {
    /// The oldest transactions open on the server that hold its horizon
    /// back (a transaction id or a snapshot), oldest first, this session
    /// excepted. Other roles' sessions are seen in full with
    /// `pg_read_all_stats` (`pg_monitor`; a managed service's admin role
    /// has it); without it their age and state are hidden and they are
    /// not listed.
    pub async fn open_transactions(&self, limit: u32) -> Result<Vec<OpenTransaction>> {
        self.run("open_transactions", || async move {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT * FROM ( \
                   SELECT pid, datname::text, coalesce(application_name, ''), coalesce(state, ''), \
                          extract(epoch FROM now() - xact_start)::float8 AS age, backend_xid IS NOT NULL \
                   FROM pg_stat_activity \
                   WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() \
                     AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) \
                   UNION ALL \
                   SELECT NULL, database::text, 'prepared transaction ' || gid, 'prepared', \
                          extract(epoch FROM now() - prepared)::float8, true \
                   FROM pg_prepared_xacts) t \
                 ORDER BY age DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(pid, database, application, state, age, wrote)| OpenTransaction {
                        pid,
                        database,
                        application,
                        state,
                        age: Duration::from_secs_f64(age.max(0.0)),
                        wrote,
                    },
                )
                .collect())
        })
        .await
    }
}

impl std::fmt::Display for OpenTransaction {
    /// `pid 4711 in database "reports" (application "psql", idle in
    /// transaction, wrote) open 12m 3s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.age.as_secs();
        let age = match s {
            0..60 => format!("{s}s"),
            60..3600 => format!("{}m {}s", s / 60, s % 60),
            _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
        };
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("no backend")?,
        }
        write!(
            f,
            " in database {:?} (application {:?}, {}{}) open {age}",
            self.database.as_deref().unwrap_or("?"),
            self.application,
            if self.state.is_empty() {
                "state hidden"
            } else {
                &self.state
            },
            if self.wrote { ", wrote" } else { "" },
        )
    }
}
