//! Which entities and attributes each search endpoint accepts (after MLflow's
//! `SearchUtils`, `SearchExperimentsUtils`, `SearchModelUtils` and `SearchModelVersionUtils`).

use serde::{Deserialize, Serialize};

use crate::Entity;

/// What is being searched. It decides which entity prefixes and attribute names a filter or
/// `order_by` entry may use. [`parse_filter`](crate::parse_filter) and
/// [`parse_order_by`](crate::parse_order_by) use [`SearchTarget::Runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchTarget {
    /// `search_runs`: metrics, params, tags, attributes and datasets.
    #[default]
    Runs,
    /// `search_experiments`: attributes (`name`, `creation_time`, `last_update_time`) and tags.
    Experiments,
    /// `search_registered_models`: attribute `name` and tags.
    RegisteredModels,
    /// `search_model_versions`: attributes (`name`, `version_number`, `run_id`,
    /// `source_path`) and tags.
    ModelVersions,
}

/// Whether an attribute holds a string or a number (milliseconds since the epoch, version
/// numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrKind {
    String,
    Number,
}

pub(crate) struct AttrDef {
    pub name: &'static str,
    pub kind: AttrKind,
    /// Usable in a filter; every attribute is usable in `order_by`.
    pub searchable: bool,
    /// Other spellings, matched like `name` without regard to ASCII case.
    pub aliases: &'static [&'static str],
}

const fn attr(name: &'static str, kind: AttrKind, searchable: bool, aliases: &'static [&'static str]) -> AttrDef {
    AttrDef { name, kind, searchable, aliases }
}

use AttrKind::{Number as N, String as S};

const RUN_ATTRS: &[AttrDef] = &[
    attr("run_id", S, true, &[]),
    attr("run_name", S, true, &["run name"]),
    attr("status", S, true, &[]),
    attr("start_time", N, true, &["created"]),
    attr("end_time", N, true, &[]),
    attr("artifact_uri", S, true, &[]),
    attr("user_id", S, true, &[]),
    attr("lifecycle_stage", S, true, &[]),
    attr("experiment_id", S, false, &[]),
];

const EXPERIMENT_ATTRS: &[AttrDef] = &[
    attr("name", S, true, &[]),
    attr("creation_time", N, true, &[]),
    attr("last_update_time", N, true, &[]),
    attr("experiment_id", S, false, &[]),
];

const REGISTERED_MODEL_ATTRS: &[AttrDef] = &[
    attr("name", S, true, &[]),
    attr("creation_timestamp", N, false, &["timestamp"]),
    attr("last_updated_timestamp", N, false, &[]),
];

const MODEL_VERSION_ATTRS: &[AttrDef] = &[
    attr("name", S, true, &[]),
    attr("version_number", N, true, &[]),
    attr("run_id", S, true, &[]),
    attr("source_path", S, true, &[]),
    attr("creation_timestamp", N, false, &[]),
    attr("last_updated_timestamp", N, false, &[]),
];

impl SearchTarget {
    pub(crate) fn attributes(self) -> &'static [AttrDef] {
        match self {
            SearchTarget::Runs => RUN_ATTRS,
            SearchTarget::Experiments => EXPERIMENT_ATTRS,
            SearchTarget::RegisteredModels => REGISTERED_MODEL_ATTRS,
            SearchTarget::ModelVersions => MODEL_VERSION_ATTRS,
        }
    }

    /// The entities a filter (`order_by == false`) or an `order_by` entry may use.
    pub(crate) fn entities(self, order_by: bool) -> &'static [Entity] {
        match (self, order_by) {
            (SearchTarget::Runs, false) => {
                &[Entity::Metric, Entity::Param, Entity::Tag, Entity::Attribute, Entity::Dataset]
            }
            (SearchTarget::Runs, true) => &[Entity::Metric, Entity::Param, Entity::Tag, Entity::Attribute],
            (_, false) => &[Entity::Attribute, Entity::Tag],
            (_, true) => &[Entity::Attribute],
        }
    }

    /// `runs`, `experiments`, `registered models` or `model versions`.
    pub fn describe(self) -> &'static str {
        match self {
            SearchTarget::Runs => "runs",
            SearchTarget::Experiments => "experiments",
            SearchTarget::RegisteredModels => "registered models",
            SearchTarget::ModelVersions => "model versions",
        }
    }

    /// Looks an attribute name or alias up (ASCII case-insensitively).
    pub(crate) fn find_attribute(self, name: &str) -> Option<&'static AttrDef> {
        self.attributes()
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name) || d.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
    }
}

/// The kind of a canonical attribute name for `target` (`None` if it has no such attribute).
/// Handy when translating a [`Comparison`](crate::Comparison) on an attribute to SQL.
pub fn attribute_kind(target: SearchTarget, name: &str) -> Option<AttrKind> {
    target.attributes().iter().find(|d| d.name == name).map(|d| d.kind)
}

/// The dataset fields MLflow lets a filter use.
pub(crate) const DATASET_FIELDS: &[&str] = &["name", "digest", "context"];
