//! sea-orm entities, one module per table. The schema itself is made by [`crate::migrations`];
//! these types only describe it to the query builder.
//!
//! JSON documents (labels, annotations, spec, status) are stored as text, so that the same
//! schema works on SQLite and PostgreSQL.

pub mod event;
pub mod experiment;
pub mod experiment_tag;
pub mod latest_metric;
pub mod metric;
pub mod param;
pub mod resource;
pub mod run;
pub mod tag;
