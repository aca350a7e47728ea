//! Plugin key/value state in the embedded database, so a restart of
//! `vigil run` keeps what plugins stored (counters, last-seen values...).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreResult;
use crate::capabilities::kv::{KvBackend, KvError};

/// The quota check and the write happen in one transaction.
pub struct SqliteKv {
    connection: Mutex<Connection>,
}

impl SqliteKv {
    pub fn open(path: &Path) -> StoreResult<SqliteKv> {
        let connection = super::sqlite::open_database(
            path,
            "CREATE TABLE IF NOT EXISTS plugin_kv (
                 plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (plugin, key)
             );",
        )?;
        Ok(SqliteKv {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn used(connection: &Connection, plugin: &str) -> rusqlite::Result<u64> {
    connection.query_row(
        "SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0) FROM plugin_kv WHERE plugin = ?1",
        params![plugin],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}

/// Storage failures surface to the plugin as a full store (it must cope
/// with that anyway) and are logged for the operator.
fn log_failure(what: &str, error: &rusqlite::Error) {
    tracing::error!(error = %error, "plugin key/value store: {what}");
}

impl KvBackend for SqliteKv {
    fn get(&self, plugin: &str, key: &str) -> Option<Vec<u8>> {
        let connection = self.lock();
        connection
            .query_row(
                "SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                params![plugin, key],
                |row| row.get(0),
            )
            .optional()
            .unwrap_or_else(|e| {
                log_failure("get", &e);
                None
            })
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvError> {
        let mut connection = self.lock();
        let result = (|| -> rusqlite::Result<Result<(), KvError>> {
            let tx = connection.transaction()?;
            let old: Option<i64> = tx
                .query_row(
                    "SELECT length(CAST(key AS BLOB)) + length(value) FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                    params![plugin, key],
                    |row| row.get(0),
                )
                .optional()?;
            let total = used(&tx, plugin)? - old.unwrap_or(0).max(0) as u64
                + (key.len() + value.len()) as u64;
            if total > quota {
                return Ok(Err(KvError::QuotaExceeded(quota)));
            }
            tx.execute(
                "INSERT INTO plugin_kv (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(plugin, key) DO UPDATE SET value = ?3",
                params![plugin, key, value],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })();
        result.unwrap_or_else(|e| {
            log_failure("set", &e);
            Err(KvError::QuotaExceeded(quota))
        })
    }

    fn delete(&self, plugin: &str, key: &str) {
        if let Err(e) = self.lock().execute(
            "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
        ) {
            log_failure("delete", &e);
        }
    }

    fn keys(&self, plugin: &str) -> Vec<String> {
        let connection = self.lock();
        let result = (|| -> rusqlite::Result<Vec<String>> {
            let mut query = connection
                .prepare_cached("SELECT key FROM plugin_kv WHERE plugin = ?1 ORDER BY key")?;
            query
                .query_map(params![plugin], |row| row.get(0))?
                .collect()
        })();
        result.unwrap_or_else(|e| {
            log_failure("keys", &e);
            Vec::new()
        })
    }

    fn usage(&self, plugin: &str) -> u64 {
        used(&self.lock(), plugin).unwrap_or_else(|e| {
            log_failure("usage", &e);
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening_and_enforces_the_quota() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vigil.db");
        {
            let kv = SqliteKv::open(&path).expect("open");
            kv.set("p", "abc", &[1; 7], 20).expect("fits");
            kv.set("p", "abc", &[2; 17], 20).expect("replacing fits");
            assert!(matches!(
                kv.set("p", "d", &[0], 20),
                Err(KvError::QuotaExceeded(20))
            ));
            kv.set("q", "abc", b"x", 20).expect("other plugin");
        }
        let kv = SqliteKv::open(&path).expect("reopen");
        assert_eq!(kv.get("p", "abc"), Some(vec![2; 17]));
        assert_eq!(kv.usage("p"), 20);
        assert_eq!(kv.keys("q"), vec!["abc".to_owned()]);
        kv.delete("p", "abc");
        assert_eq!((kv.get("p", "abc"), kv.usage("p")), (None, 0));
        // Multi-byte keys count in bytes, like the in-memory store.
        kv.set("p", "é", b"", 20).expect("fits");
        assert_eq!(kv.usage("p"), 2);
    }
}
