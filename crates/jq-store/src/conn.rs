//! Connections for the hot paths. sqlx's pool tests every connection it
//! takes back with a round trip (a `Sync`), and that cannot be turned off;
//! with the statement itself that is two round trips, two wake-ups of a
//! backend and of this process, for a one-statement submit or worker call.
//! A serial caller that runs all day (the submit and worker-call lanes, the
//! dispatcher) keeps one connection instead: `Store::pinned` (ADR 0010).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use tokio::sync::{Mutex, MutexGuard};

use crate::{PING_IDLE_AFTER, Result, Store, StoreError};

/// The connection a pinned store keeps, and when it was last given back.
pub(crate) type Pinned = Arc<Mutex<Option<(PoolConnection<Postgres>, Instant)>>>;

/// Every pinned handle's slot, shared by all clones of a store, so that
/// `close` can take their connections back: the pool's close waits until
/// every connection is returned, and the handles outlive it (the server's
/// batch lanes end only when the server is dropped).
pub(crate) type Pins = Arc<std::sync::Mutex<Vec<Weak<Mutex<Option<(PoolConnection<Postgres>, Instant)>>>>>>;

/// Pools smaller than this don't pin: three lanes holding a connection each
/// would starve the reapers, heartbeats and reads of the rest.
pub const MIN_POOL_TO_PIN: u32 = 8;

/// A connection for one operation: from the pool, or the pinned one.
pub(crate) enum Conn<'a> {
    Pool(PoolConnection<Postgres>),
    Pinned {
        slot: MutexGuard<'a, Option<(PoolConnection<Postgres>, Instant)>>,
        keep: bool,
    },
}

impl Conn<'_> {
    /// Keep a pinned connection unless `r` failed in a way that may have
    /// left it broken (anything but the database refusing a statement);
    /// pass `r` on. Without this (an error, a panic, a cancelled call) the
    /// connection goes back to the pool, whose test on return also ends any
    /// transaction left open, and the next operation takes a fresh one.
    pub(crate) fn settle<T, E: MayBreak>(
        &mut self,
        r: std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if let Conn::Pinned { keep, .. } = self
            && r.as_ref().err().is_none_or(|e| !e.may_break())
        {
            *keep = true;
        }
        r
    }
}

/// Errors after which a connection is not trusted for the next operation.
pub(crate) trait MayBreak {
    fn may_break(&self) -> bool;
}

impl MayBreak for sqlx::Error {
    fn may_break(&self) -> bool {
        !matches!(self, sqlx::Error::Database(_))
    }
}

impl MayBreak for StoreError {
    fn may_break(&self) -> bool {
        match self {
            StoreError::Database(e) | StoreError::Unavailable(e) => e.may_break(),
            StoreError::Migration(_) => true,
            // Decided here, not by the connection.
            _ => false,
        }
    }
}

impl Deref for Conn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Pool(c) => c,
            Conn::Pinned { slot, .. } => &slot.as_ref().expect("a pinned Conn holds its connection").0,
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Pool(c) => c,
            Conn::Pinned { slot, .. } => &mut slot.as_mut().expect("a pinned Conn holds its connection").0,
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Conn::Pinned { slot, keep } = self {
            if *keep {
                if let Some((_, at)) = slot.as_mut() {
                    *at = Instant::now();
                }
            } else {
                slot.take();
            }
        }
    }
}

impl Store {
    /// A handle for one serial caller that keeps its own connection between
    /// operations (see the module comment). Operations on it wait for each
    /// other, so give each concurrent caller its own. A plain clone when the
    /// pool is smaller than `MIN_POOL_TO_PIN`.
    pub fn pinned(&self) -> Store {
        let mut s = self.clone();
        s.pinned = (self.pool.options().get_max_connections() >= MIN_POOL_TO_PIN).then(|| {
            let slot: Pinned = Arc::new(Mutex::new(None));
            let mut pins = self.pins.lock().expect("pins lock");
            pins.retain(|w| w.strong_count() > 0);
            pins.push(Arc::downgrade(&slot));
            slot
        });
        s
    }

    /// Give every pinned connection back to the pool (before closing it).
    /// A handle in the middle of an operation finishes it first.
    pub(crate) async fn unpin_all(&self) {
        let pins: Vec<Pinned> = {
            let pins = self.pins.lock().expect("pins lock");
            pins.iter().filter_map(Weak::upgrade).collect()
        };
        for slot in pins {
            slot.lock().await.take();
        }
    }

    /// Whether this handle keeps its own connection.
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// The PostgreSQL backend serving this handle's next operation (which
    /// connection a pinned handle keeps; `pg_stat_activity.pid`).
    pub async fn backend_pid(&self) -> Result<i32> {
        let mut conn = self.conn().await?;
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await;
        conn.settle(pid).map_err(StoreError::from)
    }

    /// The connection for one operation of this handle.
    pub(crate) async fn conn(&self) -> Result<Conn<'_>> {
        let Some(pinned) = &self.pinned else {
            return Ok(Conn::Pool(self.pool.acquire().await?));
        };
        let mut slot = pinned.lock().await;
        if let Some((c, at)) = slot.as_mut() {
            // Kept unused a while: it may have been closed meanwhile.
            if at.elapsed() > PING_IDLE_AFTER && sqlx::Connection::ping(&mut **c).await.is_err() {
                slot.take();
            }
        }
        if slot.is_none() {
            *slot = Some((self.pool.acquire().await?, Instant::now()));
        }
        Ok(Conn::Pinned { slot, keep: false })
    }
}

/// A session-level advisory lock on a connection of its own, for the
/// maintainers whose DDL cannot run in a transaction block (`CONCURRENTLY`)
/// and so cannot hold a transaction-level lock.
pub(crate) struct SessionLock {
    key: i64,
    pub conn: PoolConnection<Postgres>,
}

impl Store {
    /// The lock `key` on a connection of its own, or `None` while another
    /// replica holds it.
    pub(crate) async fn try_session_lock(&self, key: i64) -> Result<Option<SessionLock>> {
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(SessionLock { key, conn }))
    }
}

impl SessionLock {
    /// Unlock and pass `r` on. After an error the connection is closed,
    /// not returned: that also ends the lock, and any statement setting
    /// or transaction left behind.
    pub async fn release<T>(mut self, r: Result<T>) -> Result<T> {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *self.conn)
            .await;
        if r.is_err() || unlocked.is_err() {
            self.conn.close_on_drop();
        }
        r
    }
}
