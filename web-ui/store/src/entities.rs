//! sea-orm entities, one module per table. The schema itself is made by [`crate::migrations`];
//! these types only describe it to the query builder.
//!
//! JSON documents (labels, annotations, spec, status) are stored as text, so that the same
//! schema works on SQLite and PostgreSQL.

pub mod dataset;
pub mod event;
pub mod experiment;
pub mod experiment_tag;
pub mod gpu_device;
pub mod gpu_node;
pub mod gpu_sample;
pub mod input;
pub mod input_tag;
pub mod latest_metric;
pub mod logged_model;
pub mod logged_model_param;
pub mod logged_model_tag;
pub mod metric;
pub mod metric_series;
pub mod metric_tile;
pub mod model_version;
pub mod model_version_tag;
pub mod param;
pub mod registered_model;
pub mod registered_model_alias;
pub mod registered_model_alias_event;
pub mod registered_model_tag;
pub mod resource;
pub mod run;
pub mod secret;
pub mod tag;
pub mod webhook_delivery;
