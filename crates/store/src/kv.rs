//! Plugin key/value state in the embedded database, so a restart of
//! `vigil run` keeps what plugins stored (counters, last-seen values...).
//!
//! # Under load
//!
//! The store has its own SQLite connection (not the one resources, runs
//! and latest values go through), with a busy timeout ([`BUSY_TIMEOUT`]),
//! and the sandbox calls it off the async workers (see
//! [`vigil_core::kv`]). A write is one `BEGIN IMMEDIATE`
//! transaction: the write lock is taken first, waiting out the busy
//! timeout, and only then is the quota read and the value written. The
//! earlier deferred transaction read first and upgraded to a write
//! afterwards; when the host's other connection committed in between
//! (every second for run history, every flush for latest values), SQLite
//! refused the upgrade at once with `database is locked` (a stale
//! snapshot cannot be upgraded, and the busy timeout does not apply), and
//! that error reached the plugin as "quota exceeded". In
//! `tests/tests/suite/hostile_ownership.rs` 64 concurrent heartbeat runs against
//! a writer committing 1,000-row transactions in a loop saw such false
//! quota errors before; none now.
//!
//! Failures that remain (a lock held longer than the busy timeout, a full
//! disk, a corrupt file) are reported as [`KvFailure`]s naming SQLite's
//! error: the run ends as a host failure, never as the plugin's quota.
//!
//! Usage is the sum of key and value bytes of the plugin's rows, computed
//! in the write's transaction: one indexed range scan of the plugin's own
//! keys (at the default 1 MiB quota, at most a few thousand rows).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::StoreResult;
use vigil_core::kv::{KvBackend, KvError, KvFailure};

/// How long a call waits for another connection's write lock. Writers on
/// the host's database hold it for milliseconds (the largest, a 10,000
/// resource discovery, about 100 ms on a laptop disk); 5 s is fifty times
/// that and half the default run deadline.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS plugin_kv (
    plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (plugin, key)
);";

/// SQLite's own wait for the write lock per attempt. Short on purpose:
/// SQLite's busy handler sleeps up to 100 ms between tries, and a
/// connection that commits every few milliseconds (the agent's store under
/// load) can take the lock in every gap, so one long wait can starve
/// (seen: a kv write failing after 5 s against 135 commits a second).
/// Retrying every millisecond up to the busy timeout does not.
const BUSY_STEP: Duration = Duration::from_millis(2);

pub struct SqliteKv {
    connection: Mutex<Connection>,
    /// How long a write may wait for another connection's write lock.
    busy: Duration,
}

impl SqliteKv {
    pub fn open(path: &Path) -> StoreResult<SqliteKv> {
        SqliteKv::open_with_busy_timeout(path, BUSY_TIMEOUT)
    }

    /// Opens with another busy timeout (tests use a short one to see a
    /// lock outlast it).
    pub fn open_with_busy_timeout(path: &Path, busy: Duration) -> StoreResult<SqliteKv> {
        let connection = super::sqlite::open_database(path, SCHEMA)?;
        connection.busy_timeout(BUSY_STEP.min(busy))?;
        Ok(SqliteKv {
            connection: Mutex::new(connection),
            busy,
        })
    }

    /// Runs a write, trying again every millisecond while another
    /// connection holds the write lock, until the busy timeout.
    fn write<T>(
        &self,
        mut attempt: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let deadline = Instant::now() + self.busy;
        let mut connection = self.lock();
        loop {
            match attempt(&mut connection) {
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => return other,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // SQLite rolls back an unfinished transaction; the connection is
        // safe to reuse after a panic elsewhere.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn used(connection: &Connection, plugin: &str) -> rusqlite::Result<u64> {
    connection
        .prepare_cached(
            "SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0) FROM plugin_kv WHERE plugin = ?1",
        )?
        .query_row(params![plugin], |row| row.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
}

fn failure(operation: &'static str, plugin: &str) -> impl FnOnce(rusqlite::Error) -> KvFailure {
    move |e| KvFailure::new(operation, plugin, format!("SQLite: {e}"))
}

impl KvBackend for SqliteKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        self.lock()
            .prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2")
            .and_then(|mut query| {
                query
                    .query_row(params![plugin, key], |row| row.get(0))
                    .optional()
            })
            .map_err(failure("get", plugin))
    }

    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<Result<(), KvError>, KvFailure> {
        let result = self.write(|connection| -> rusqlite::Result<Result<(), KvError>> {
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old: Option<i64> = tx
                .prepare_cached(
                    "SELECT length(CAST(key AS BLOB)) + length(value) FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                )?
                .query_row(params![plugin, key], |row| row.get(0))
                .optional()?;
            let total = used(&tx, plugin)?.saturating_sub(old.unwrap_or(0).max(0) as u64)
                + (key.len() + value.len()) as u64;
            if total > quota {
                return Ok(Err(KvError::QuotaExceeded(quota)));
            }
            tx.prepare_cached(
                "INSERT INTO plugin_kv (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(plugin, key) DO UPDATE SET value = ?3",
            )?
            .execute(params![plugin, key, value])?;
            tx.commit()?;
            Ok(Ok(()))
        });
        result.map_err(failure("set", plugin))
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure> {
        self.write(|connection| {
            connection.execute(
                "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                params![plugin, key],
            )
        })
        .map(drop)
        .map_err(failure("delete", plugin))
    }

    fn keys(&self, plugin: &str) -> Result<Vec<String>, KvFailure> {
        let connection = self.lock();
        let result = (|| -> rusqlite::Result<Vec<String>> {
            let mut query = connection
                .prepare_cached("SELECT key FROM plugin_kv WHERE plugin = ?1 ORDER BY key")?;
            query
                .query_map(params![plugin], |row| row.get(0))?
                .collect()
        })();
        result.map_err(failure("keys", plugin))
    }

    fn usage(&self, plugin: &str) -> Result<u64, KvFailure> {
        used(&self.lock(), plugin).map_err(failure("usage", plugin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening_and_enforces_the_quota() -> Result<(), KvFailure> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vigil.db");
        {
            let kv = SqliteKv::open(&path).expect("open");
            kv.set("p", "abc", &[1; 7], 20)?.expect("fits");
            kv.set("p", "abc", &[2; 17], 20)?.expect("replacing fits");
            assert!(matches!(
                kv.set("p", "d", &[0], 20)?,
                Err(KvError::QuotaExceeded(20))
            ));
            kv.set("q", "abc", b"x", 20)?.expect("other plugin");
        }
        let kv = SqliteKv::open(&path).expect("reopen");
        assert_eq!(kv.get("p", "abc")?, Some(vec![2; 17]));
        assert_eq!(kv.usage("p")?, 20);
        assert_eq!(kv.keys("q")?, vec!["abc".to_owned()]);
        kv.delete("p", "abc")?;
        assert_eq!((kv.get("p", "abc")?, kv.usage("p")?), (None, 0));
        // Multi-byte keys count in bytes, like the in-memory store.
        kv.set("p", "é", b"", 20)?.expect("fits");
        assert_eq!(kv.usage("p")?, 2);
        Ok(())
    }

    #[test]
    fn a_lock_held_past_the_busy_timeout_is_a_failure_not_a_quota() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vigil.db");
        let kv = SqliteKv::open_with_busy_timeout(&path, Duration::from_millis(50)).expect("open");
        let other = Connection::open(&path).expect("other connection");
        other
            .execute_batch("BEGIN IMMEDIATE")
            .expect("hold the write lock");
        let error = kv.set("p", "k", b"v", 1 << 20).expect_err("locked");
        assert_eq!((error.operation, error.plugin.as_str()), ("set", "p"));
        assert!(error.cause.contains("locked"), "{error}");
        other.execute_batch("ROLLBACK").expect("release");
        assert_eq!(kv.set("p", "k", b"v", 1 << 20), Ok(Ok(())));
    }
}
