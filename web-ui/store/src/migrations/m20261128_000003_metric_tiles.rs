//! Storage for long metric histories.
//!
//! - `metric_tiles`: per run, metric key, level and tile (a block of `16^level` consecutive
//!   steps), the first, last, lowest and highest point of the tile (see
//!   [`crate::downsample`]). `metrics/get-history-bulk-interval` merges a few hundred tiles
//!   instead of reading every point of a long history. Points already stored get their tiles
//!   here, once.
//! - On SQLite, `metrics` and `metric_tiles` are stored clustered by their primary key
//!   (`WITHOUT ROWID`): one B-tree per table instead of a table plus an index holding the
//!   same columns again, so a point costs one B-tree insert and half the bytes. PostgreSQL
//!   keeps its heap tables (the statement is SQLite's only).

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, boolean, double, small_integer, string};

use crate::downsample::{tiles_of, Sample, Summary};

/// Creates `metric_tiles` and fills it from the stored points; clusters both tables on SQLite.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    RunUuid,
}

#[derive(DeriveIden, Clone, Copy)]
enum Metrics {
    RunUuid,
    Key,
    Step,
    Timestamp,
    Value,
    IsNan,
}

/// The `metrics` table as the initial migration made it, under `name`.
fn metrics_table(name: &str) -> TableCreateStatement {
    Table::create()
        .table(Alias::new(name))
        .col(string(Metrics::RunUuid))
        .col(string(Metrics::Key))
        .col(big_integer(Metrics::Step))
        .col(big_integer(Metrics::Timestamp))
        .col(double(Metrics::Value))
        .col(boolean(Metrics::IsNan))
        .primary_key(
            Index::create()
                .col(Metrics::RunUuid)
                .col(Metrics::Key)
                .col(Metrics::Step)
                .col(Metrics::Timestamp)
                .col(Metrics::Value)
                .col(Metrics::IsNan),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_metrics_run")
                .from(Alias::new(name), Metrics::RunUuid)
                .to(Runs::Table, Runs::RunUuid)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

/// Rebuild SQLite's `metrics` table, clustered by its key (`WITHOUT ROWID`) or not, keeping
/// every row.
async fn rebuild_sqlite_metrics(manager: &SchemaManager<'_>, clustered: bool) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let mut create = metrics_table("metrics_rebuilt").to_string(SqliteQueryBuilder);
    if clustered {
        create.push_str(" WITHOUT ROWID");
    }
    db.execute_unprepared(&create).await?;
    db.execute_unprepared(
        r#"INSERT INTO "metrics_rebuilt" ("run_uuid", "key", "step", "timestamp", "value", "is_nan")
           SELECT "run_uuid", "key", "step", "timestamp", "value", "is_nan" FROM "metrics""#,
    )
    .await?;
    db.execute_unprepared(r#"DROP TABLE "metrics""#).await?;
    db.execute_unprepared(r#"ALTER TABLE "metrics_rebuilt" RENAME TO "metrics""#).await?;
    Ok(())
}

#[derive(DeriveIden, Clone, Copy)]
enum MetricTiles {
    Table,
    RunUuid,
    Key,
    Level,
    Tile,
    FirstStep,
    FirstTimestamp,
    FirstValue,
    FirstIsNan,
    LastStep,
    LastTimestamp,
    LastValue,
    LastIsNan,
    MinStep,
    MinTimestamp,
    MinValue,
    MinIsNan,
    MaxStep,
    MaxTimestamp,
    MaxValue,
    MaxIsNan,
}

/// The four columns of each extreme point: (step, timestamp, value, is_nan).
const POINT_COLUMNS: [[MetricTiles; 4]; 4] = [
    [MetricTiles::FirstStep, MetricTiles::FirstTimestamp, MetricTiles::FirstValue, MetricTiles::FirstIsNan],
    [MetricTiles::LastStep, MetricTiles::LastTimestamp, MetricTiles::LastValue, MetricTiles::LastIsNan],
    [MetricTiles::MinStep, MetricTiles::MinTimestamp, MetricTiles::MinValue, MetricTiles::MinIsNan],
    [MetricTiles::MaxStep, MetricTiles::MaxTimestamp, MetricTiles::MaxValue, MetricTiles::MaxIsNan],
];

/// Tiles per INSERT of the backfill (20 columns each).
const BACKFILL_CHUNK: usize = 400;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(MetricTiles::Table)
            .col(string(MetricTiles::RunUuid))
            .col(string(MetricTiles::Key))
            .col(small_integer(MetricTiles::Level))
            .col(big_integer(MetricTiles::Tile));
        for [step, timestamp, value, is_nan] in POINT_COLUMNS {
            table.col(big_integer(step)).col(big_integer(timestamp)).col(double(value)).col(boolean(is_nan));
        }
        table
            .primary_key(
                Index::create()
                    .col(MetricTiles::RunUuid)
                    .col(MetricTiles::Key)
                    .col(MetricTiles::Level)
                    .col(MetricTiles::Tile),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_metric_tiles_run")
                    .from(MetricTiles::Table, MetricTiles::RunUuid)
                    .to(Runs::Table, Runs::RunUuid)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        if manager.get_database_backend() == DbBackend::Sqlite {
            let create = format!("{} WITHOUT ROWID", table.to_string(SqliteQueryBuilder));
            manager.get_connection().execute_unprepared(&create).await?;
            rebuild_sqlite_metrics(manager, true).await?;
        } else {
            manager.create_table(table.to_owned()).await?;
        }
        backfill(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MetricTiles::Table).to_owned()).await?;
        if manager.get_database_backend() == DbBackend::Sqlite {
            rebuild_sqlite_metrics(manager, false).await?;
        }
        Ok(())
    }

    /// All or nothing (SQLite and PostgreSQL both have transactional DDL).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Tiles for every point already stored, one (run, key) at a time.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = db.get_database_backend();
    let pairs = db
        .query_all_raw(Statement::from_string(
            backend,
            r#"SELECT DISTINCT "run_uuid", "key" FROM "metrics" ORDER BY "run_uuid", "key""#,
        ))
        .await?;
    for pair in pairs {
        let run_uuid: String = pair.try_get_by_index(0)?;
        let key: String = pair.try_get_by_index(1)?;
        let select = Query::select()
            .columns([Alias::new("step"), Alias::new("timestamp"), Alias::new("value"), Alias::new("is_nan")])
            .from(Alias::new("metrics"))
            .and_where(Expr::col(Alias::new("run_uuid")).eq(run_uuid.as_str()))
            .and_where(Expr::col(Alias::new("key")).eq(key.as_str()))
            .to_owned();
        let mut points = Vec::new();
        for row in db.query_all(&select).await? {
            let value: f64 = row.try_get_by_index(2)?;
            let is_nan: bool = row.try_get_by_index(3)?;
            points.push(Sample {
                step: row.try_get_by_index(0)?,
                timestamp: row.try_get_by_index(1)?,
                value: if is_nan { f64::NAN } else { value },
            });
        }
        let tiles = tiles_of(&points);
        for chunk in tiles.chunks(BACKFILL_CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(MetricTiles::Table).columns(
                [MetricTiles::RunUuid, MetricTiles::Key, MetricTiles::Level, MetricTiles::Tile]
                    .into_iter()
                    .chain(POINT_COLUMNS.into_iter().flatten()),
            );
            for &(level, tile, summary) in chunk {
                let mut values: Vec<SimpleExpr> =
                    vec![run_uuid.as_str().into(), key.as_str().into(), i16::from(level).into(), tile.into()];
                values.extend(summary_values(&summary));
                insert.values(values).map_err(|e| DbErr::Custom(e.to_string()))?;
            }
            db.execute(&insert).await?;
        }
    }
    Ok(())
}

/// The 16 point columns of a summary, in [`POINT_COLUMNS`] order.
fn summary_values(s: &Summary) -> Vec<SimpleExpr> {
    [s.first, s.last, s.min, s.max]
        .into_iter()
        .flat_map(|p| {
            let (value, is_nan) = p.stored();
            [p.step.into(), p.timestamp.into(), value.into(), is_nan.into()]
        })
        .collect()
}
