//! Metric series: one row per (run, metric key) in `metric_series`, with an integer id that
//! `metrics` and `metric_tiles` are keyed by instead of the run id and key text.
//!
//! A point was `(run_uuid, key, step, timestamp, value, is_nan)`: a 32-character run id and
//! the key repeated in every row, compared on every B-tree step, and a foreign-key probe into
//! `runs` by text for every point written. Keyed by `series_id`, a point row is about a third
//! of the bytes (fewer pages to write to the WAL and to fsync), its comparisons start with an
//! integer, and its foreign-key check is a rowid lookup. Every stored point is kept, and every
//! tile of a level the store still reads ([`crate::downsample::MIN_LEVEL`] and up; the finest
//! level, 16 steps, is no longer kept: such groups are summed from the points). Undone, the
//! points and those tiles go back under run id and key, without the finest level.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_pk_auto, boolean, double, small_integer, string};

/// Creates `metric_series` and rebuilds `metrics` and `metric_tiles` keyed by series id.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    RunUuid,
}

#[derive(DeriveIden, Clone, Copy)]
enum MetricSeries {
    Table,
    Id,
    RunUuid,
    Key,
}

#[derive(DeriveIden, Clone, Copy)]
enum Col {
    SeriesId,
    RunUuid,
    Key,
    Step,
    Timestamp,
    Value,
    IsNan,
    Level,
    Tile,
}

/// The 16 point columns of a tile (first, last, min, max; each step, timestamp, value, is_nan).
const TILE_POINTS: [&str; 16] = [
    "first_step",
    "first_timestamp",
    "first_value",
    "first_is_nan",
    "last_step",
    "last_timestamp",
    "last_value",
    "last_is_nan",
    "min_step",
    "min_timestamp",
    "min_value",
    "min_is_nan",
    "max_step",
    "max_timestamp",
    "max_value",
    "max_is_nan",
];

/// Adds a tile's 16 point columns to `table`.
fn tile_point_columns(table: &mut TableCreateStatement) {
    for chunk in TILE_POINTS.chunks(4) {
        table
            .col(big_integer(Alias::new(chunk[0])))
            .col(big_integer(Alias::new(chunk[1])))
            .col(double(Alias::new(chunk[2])))
            .col(boolean(Alias::new(chunk[3])));
    }
}

/// `metrics` keyed by series, under `name`.
fn points_by_series(name: &str) -> TableCreateStatement {
    Table::create()
        .table(Alias::new(name))
        .col(big_integer(Col::SeriesId))
        .col(big_integer(Col::Step))
        .col(big_integer(Col::Timestamp))
        .col(double(Col::Value))
        .col(boolean(Col::IsNan))
        .primary_key(
            Index::create().col(Col::SeriesId).col(Col::Step).col(Col::Timestamp).col(Col::Value).col(Col::IsNan),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_metrics_series")
                .from(Alias::new(name), Col::SeriesId)
                .to(MetricSeries::Table, MetricSeries::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

/// `metric_tiles` keyed by series, under `name`.
fn tiles_by_series(name: &str) -> TableCreateStatement {
    let mut table = Table::create();
    table
        .table(Alias::new(name))
        .col(big_integer(Col::SeriesId))
        .col(small_integer(Col::Level))
        .col(big_integer(Col::Tile));
    tile_point_columns(&mut table);
    table
        .primary_key(Index::create().col(Col::SeriesId).col(Col::Level).col(Col::Tile))
        .foreign_key(
            ForeignKey::create()
                .name("fk_metric_tiles_series")
                .from(Alias::new(name), Col::SeriesId)
                .to(MetricSeries::Table, MetricSeries::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

/// `metrics` as migrations 1 and 3 left it (keyed by run id and key), under `name`.
fn points_by_run(name: &str) -> TableCreateStatement {
    Table::create()
        .table(Alias::new(name))
        .col(string(Col::RunUuid))
        .col(string(Col::Key))
        .col(big_integer(Col::Step))
        .col(big_integer(Col::Timestamp))
        .col(double(Col::Value))
        .col(boolean(Col::IsNan))
        .primary_key(
            Index::create()
                .col(Col::RunUuid)
                .col(Col::Key)
                .col(Col::Step)
                .col(Col::Timestamp)
                .col(Col::Value)
                .col(Col::IsNan),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_metrics_run")
                .from(Alias::new(name), Col::RunUuid)
                .to(Runs::Table, Runs::RunUuid)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

/// `metric_tiles` as migration 3 made it, under `name`.
fn tiles_by_run(name: &str) -> TableCreateStatement {
    let mut table = Table::create();
    table
        .table(Alias::new(name))
        .col(string(Col::RunUuid))
        .col(string(Col::Key))
        .col(small_integer(Col::Level))
        .col(big_integer(Col::Tile));
    tile_point_columns(&mut table);
    table
        .primary_key(Index::create().col(Col::RunUuid).col(Col::Key).col(Col::Level).col(Col::Tile))
        .foreign_key(
            ForeignKey::create()
                .name("fk_metric_tiles_run")
                .from(Alias::new(name), Col::RunUuid)
                .to(Runs::Table, Runs::RunUuid)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

/// Create `table` (clustered by its primary key on SQLite: `WITHOUT ROWID`, as migration 3
/// made the tables it replaces).
async fn create(manager: &SchemaManager<'_>, table: TableCreateStatement) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::Sqlite {
        let sql = format!("{} WITHOUT ROWID", table.to_string(SqliteQueryBuilder));
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    } else {
        manager.create_table(table).await
    }
}

/// Replace `old` with `new` (already filled).
async fn swap(manager: &SchemaManager<'_>, old: &str, new: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    db.execute_unprepared(&format!(r#"DROP TABLE "{old}""#)).await?;
    db.execute_unprepared(&format!(r#"ALTER TABLE "{new}" RENAME TO "{old}""#)).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        manager
            .create_table(
                Table::create()
                    .table(MetricSeries::Table)
                    .col(big_pk_auto(MetricSeries::Id))
                    .col(string(MetricSeries::RunUuid))
                    .col(string(MetricSeries::Key))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_metric_series_run")
                            .from(MetricSeries::Table, MetricSeries::RunUuid)
                            .to(Runs::Table, Runs::RunUuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_metric_series_run_key")
                    .table(MetricSeries::Table)
                    .col(MetricSeries::RunUuid)
                    .col(MetricSeries::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Every (run, key) with points or tiles (tiles exist only for stored points).
        db.execute_unprepared(
            r#"INSERT INTO "metric_series" ("run_uuid", "key")
               SELECT DISTINCT "run_uuid", "key" FROM "metrics" ORDER BY "run_uuid", "key""#,
        )
        .await?;

        create(manager, points_by_series("metrics_by_series")).await?;
        db.execute_unprepared(
            r#"INSERT INTO "metrics_by_series" ("series_id", "step", "timestamp", "value", "is_nan")
               SELECT "s"."id", "m"."step", "m"."timestamp", "m"."value", "m"."is_nan"
               FROM "metrics" AS "m" JOIN "metric_series" AS "s" ON "s"."run_uuid" = "m"."run_uuid" AND "s"."key" = "m"."key""#,
        )
        .await?;
        swap(manager, "metrics", "metrics_by_series").await?;

        let points = TILE_POINTS.iter().map(|c| format!(r#""{c}""#)).collect::<Vec<_>>();
        let tile_points = points.join(", ");
        let t_points = points.iter().map(|c| format!(r#""t".{c}"#)).collect::<Vec<_>>().join(", ");
        create(manager, tiles_by_series("metric_tiles_by_series")).await?;
        db.execute_unprepared(&format!(
            r#"INSERT INTO "metric_tiles_by_series" ("series_id", "level", "tile", {tile_points})
               SELECT "s"."id", "t"."level", "t"."tile", {t_points}
               FROM "metric_tiles" AS "t" JOIN "metric_series" AS "s" ON "s"."run_uuid" = "t"."run_uuid" AND "s"."key" = "t"."key"
               WHERE "t"."level" >= {min_level}"#,
            min_level = crate::downsample::MIN_LEVEL,
        ))
        .await?;
        swap(manager, "metric_tiles", "metric_tiles_by_series").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        create(manager, points_by_run("metrics_by_run")).await?;
        db.execute_unprepared(
            r#"INSERT INTO "metrics_by_run" ("run_uuid", "key", "step", "timestamp", "value", "is_nan")
               SELECT "s"."run_uuid", "s"."key", "m"."step", "m"."timestamp", "m"."value", "m"."is_nan"
               FROM "metrics" AS "m" JOIN "metric_series" AS "s" ON "s"."id" = "m"."series_id""#,
        )
        .await?;
        swap(manager, "metrics", "metrics_by_run").await?;

        let points = TILE_POINTS.iter().map(|c| format!(r#""{c}""#)).collect::<Vec<_>>();
        let tile_points = points.join(", ");
        let t_points = points.iter().map(|c| format!(r#""t".{c}"#)).collect::<Vec<_>>().join(", ");
        create(manager, tiles_by_run("metric_tiles_by_run")).await?;
        db.execute_unprepared(&format!(
            r#"INSERT INTO "metric_tiles_by_run" ("run_uuid", "key", "level", "tile", {tile_points})
               SELECT "s"."run_uuid", "s"."key", "t"."level", "t"."tile", {t_points}
               FROM "metric_tiles" AS "t" JOIN "metric_series" AS "s" ON "s"."id" = "t"."series_id""#
        ))
        .await?;
        swap(manager, "metric_tiles", "metric_tiles_by_run").await?;
        manager.drop_table(Table::drop().table(MetricSeries::Table).to_owned()).await
    }

    /// All or nothing (SQLite and PostgreSQL both have transactional DDL).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
