//! The tracking API suite of `mlflow_api.rs`, on PostgreSQL: the same tests, each on a fresh
//! database of `CAPSTAN_TEST_POSTGRES_URL` (`eval "$(scripts/postgres-setup.sh)"`; they fail,
//! never skip, without it). The backend follows from this module's path (`postgres`).

#[path = "mlflow_api.rs"]
mod suite;
