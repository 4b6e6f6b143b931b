//! Databases for tests, on both backends the store supports: a SQLite file in a fresh
//! directory, or a fresh PostgreSQL database on the server named by
//! `CAPSTAN_TEST_POSTGRES_URL` (`eval "$(scripts/postgres-setup.sh)"` starts one and prints
//! it). Each [`TestDb`] is its own database, so tests run in parallel; dropping it removes the
//! directory or drops the database.
//!
//! A PostgreSQL test without `CAPSTAN_TEST_POSTGRES_URL` fails with instructions; it never
//! skips. Used by the store's own tests and by other crates' suites (the server's tracking
//! API suite runs once per backend).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::{ConnectionTrait, Database};

use crate::Store;

/// Environment variable naming the PostgreSQL server of the tests.
pub const POSTGRES_URL_ENV: &str = "CAPSTAN_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Backend {
    /// The backend a test target (or module path) stands for: PostgreSQL when its name says
    /// `postgres`, else SQLite. Lets one suite file run as two test targets.
    pub fn of_name(name: &str) -> Backend {
        if name.contains("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// `CAPSTAN_TEST_POSTGRES_URL`; panics with instructions when it is not set.
pub fn postgres_url_or_fail() -> String {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{POSTGRES_URL_ENV} is not set: the PostgreSQL variants of the tests need a server. Run\n  \
             eval \"$(scripts/postgres-setup.sh)\"\nin this shell (it installs and starts one), then the tests again."
        ),
    }
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A name no other test database has: `capstan_t_<pid>_<n>_<random>`.
fn unique_database_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("capstan_t_{}_{n}_{}", std::process::id(), &random[..8])
}

/// One test's own database, and a store opened on it.
pub struct TestDb {
    /// The store, opened (migrated) on the database.
    pub store: Store,
    /// URL of the database (open more stores on it with [`Store::open`]).
    pub url: String,
    /// The backend.
    pub backend: Backend,
    /// SQLite: the directory holding the file.
    dir: Option<PathBuf>,
    /// PostgreSQL: (server URL, database name), dropped with this.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database on `backend`, with a store opened on it.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("capstan-test-{}", unique_database_name()));
                std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
                let path = dir.join("capstan.db");
                let store = Store::open_sqlite(&path).await.expect("opening a SQLite test database");
                let url = format!("sqlite://{}?mode=rwc", path.display());
                TestDb { store, url, backend, dir: Some(dir), postgres: None }
            }
            Backend::Postgres => {
                let server = postgres_url_or_fail();
                let name = unique_database_name();
                let admin = Database::connect(server.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_ENV}={server}: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap_or_else(|e| panic!("creating database {name} on {server}: {e}"));
                let _ = admin.close().await;
                let url = with_database(&server, &name);
                let store = Store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
                TestDb { store, url, backend, dir: None, postgres: Some((server, name)) }
            }
        }
    }

    /// A fresh SQLite database.
    pub async fn sqlite() -> TestDb {
        TestDb::new(Backend::Sqlite).await
    }

    /// A fresh PostgreSQL database (fails without `CAPSTAN_TEST_POSTGRES_URL`).
    pub async fn postgres() -> TestDb {
        TestDb::new(Backend::Postgres).await
    }

    /// Another store on the same database (as a second process, or a restart, would open).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.url).await.unwrap_or_else(|e| panic!("reopening {}: {e}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((server, name)) = self.postgres.take() {
            // Drop is not async, and may run inside a runtime: use a thread with its own.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let admin = Database::connect(server.as_str()).await.ok()?;
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let result = admin.execute_unprepared(&sql).await;
                    let _ = admin.close().await;
                    result.ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(_))) {
                eprintln!("test_db: could not drop a test database on {POSTGRES_URL_ENV}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://u@h:5/db", "x"), "postgres://u@h:5/x");
        assert_eq!(with_database("postgres://u@h:5/db?sslmode=disable", "x"), "postgres://u@h:5/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(Backend::of_name("mlflow_api_postgres"), Backend::Postgres);
        assert_eq!(Backend::of_name("mlflow_api"), Backend::Sqlite);
    }
}
