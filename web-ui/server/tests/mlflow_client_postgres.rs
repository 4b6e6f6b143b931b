//! The real `mlflow` client test of `mlflow_client.rs`, on PostgreSQL: the same test on a
//! fresh database of `CAPSTAN_TEST_POSTGRES_URL` (`eval "$(scripts/postgres-setup.sh)"`; it
//! fails, never skips, without it). The backend follows from this module's path (`postgres`).

#[path = "mlflow_client.rs"]
mod suite;
