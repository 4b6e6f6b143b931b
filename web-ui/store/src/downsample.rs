//! Downsampling of long metric histories, as plain functions over values (no IO).
//!
//! MLflow's `metrics/get-history-bulk-interval` returns up to `max_results` points per run,
//! spread over the step range and keeping its ends. Capstan keeps more than the ends: the
//! range `[first step, last step]` is cut into `max_results / 4` groups of consecutive steps
//! (evenly spaced, aligned to a grid of tiles) and each group contributes its **first, last,
//! lowest and highest** point (M4), so a spike anywhere is never lost at any zoom. When the
//! range holds `max_results` points or fewer, all of them are returned (zooming in gives full
//! detail).
//!
//! The store answers such a request without reading every point: it keeps, for each run and
//! metric, a [`Summary`] per *tile* — a block of `16^level` consecutive steps, at levels
//! [`MIN_LEVEL`]..=[`MAX_LEVEL`] — updated in the same transaction as the points. Summaries merge
//! (associatively, commutatively and idempotently, so a retried point changes nothing), and
//! a group is a whole number of tiles of one level ([`Grid`]), so the store merges a few
//! hundred tiles instead of a million points. [`decompose`] says which tiles (and which few
//! raw points at the edges of a zoomed range) cover a step range. [`downsample`] is the same
//! answer computed from the points themselves: the store's result equals it (tested).
//!
//! Orders, all total and all the same as the store's SQL:
//! - *history order* of points: (step, timestamp, value, is_nan), NaN stored as value 0 with
//!   is_nan set (how the `metrics` table keeps it);
//! - *lowest*: the smallest value, NaN only when the group holds nothing else, ties to the
//!   earliest (step, timestamp);
//! - *highest*: the largest value, NaN only when the group holds nothing else, ties to the
//!   earliest (step, timestamp).

use std::cmp::Ordering;

/// Finest tile level stored: tiles of `16^2` = 256 steps. Finer groups (a [`Grid`] of level 1:
/// ranges of about 5,000 to 80,000 steps cut in 320 groups) are summed from the points
/// themselves. Level-1 tiles were 16 of every 17 tile rows written: a batch of 1,000 steps
/// wrote 63 of them, and ingest ran about a quarter faster without them
/// (BENCHMARKS.md, tracking).
pub const MIN_LEVEL: u8 = 2;
/// Coarsest tile level stored: tiles of `16^8` (about 4.3e9) steps.
pub const MAX_LEVEL: u8 = 8;
/// log2 of the number of tiles of one level in a tile of the next level.
pub const FANOUT_BITS: u32 = 4;

/// One metric point, as the downsampler sees it (`value` may be NaN or infinite).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Step.
    pub step: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Value.
    pub value: f64,
}

impl PartialEq for Sample {
    /// The same point: same step, timestamp and value (NaN equals NaN, as the store dedups it).
    fn eq(&self, other: &Self) -> bool {
        self.history_cmp(other) == Ordering::Equal
    }
}

impl Eq for Sample {}

/// Two stored (never NaN) values, compared as SQL compares doubles.
fn cmp_values(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

impl Sample {
    /// The value as stored: NaN becomes (0, true).
    pub fn stored(&self) -> (f64, bool) {
        if self.value.is_nan() {
            (0.0, true)
        } else {
            (self.value, false)
        }
    }

    /// History order: (step, timestamp, stored value, is_nan).
    pub fn history_cmp(&self, other: &Sample) -> Ordering {
        let (v, n) = self.stored();
        let (ov, on) = other.stored();
        (self.step, self.timestamp).cmp(&(other.step, other.timestamp)).then(cmp_values(v, ov)).then(n.cmp(&on))
    }

    /// Lower than `other` for the "lowest" pick: not NaN first, then smaller value, then
    /// earlier (step, timestamp).
    fn lower_than(&self, other: &Sample) -> bool {
        let (v, n) = self.stored();
        let (ov, on) = other.stored();
        n.cmp(&on).then(cmp_values(v, ov)).then((self.step, self.timestamp).cmp(&(other.step, other.timestamp))).is_lt()
    }

    /// Higher than `other` for the "highest" pick: not NaN first, then larger value, then
    /// earlier (step, timestamp).
    fn higher_than(&self, other: &Sample) -> bool {
        let (v, n) = self.stored();
        let (ov, on) = other.stored();
        n.cmp(&on).then(cmp_values(ov, v)).then((self.step, self.timestamp).cmp(&(other.step, other.timestamp))).is_lt()
    }
}

/// The four extreme points of a set of points (M4): first and last in history order,
/// lowest and highest value. Merging is associative, commutative and idempotent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// First in history order.
    pub first: Sample,
    /// Last in history order.
    pub last: Sample,
    /// Lowest value.
    pub min: Sample,
    /// Highest value.
    pub max: Sample,
}

impl Summary {
    /// The summary of one point.
    pub fn of(p: Sample) -> Summary {
        Summary { first: p, last: p, min: p, max: p }
    }

    /// Add one point.
    pub fn add(&mut self, p: Sample) {
        self.merge(&Summary::of(p));
    }

    /// Merge another summary in.
    pub fn merge(&mut self, o: &Summary) {
        if o.first.history_cmp(&self.first).is_lt() {
            self.first = o.first;
        }
        if o.last.history_cmp(&self.last).is_gt() {
            self.last = o.last;
        }
        if o.min.lower_than(&self.min) {
            self.min = o.min;
        }
        if o.max.higher_than(&self.max) {
            self.max = o.max;
        }
    }
}

/// Width in steps of a tile of `level` (level 0: one step).
pub fn tile_width(level: u8) -> i128 {
    1i128 << (FANOUT_BITS * u32::from(level))
}

/// The tile of `level` holding `step` (floor division, negative steps included).
pub fn tile_of(level: u8, step: i64) -> i64 {
    step >> (FANOUT_BITS * u32::from(level))
}

/// First step of a tile.
fn tile_start(level: u8, tile: i64) -> i128 {
    i128::from(tile) << (FANOUT_BITS * u32::from(level))
}

/// Last step of a tile.
fn tile_end(level: u8, tile: i64) -> i128 {
    tile_start(level, tile) + tile_width(level) - 1
}

/// The summaries of the tiles of every level ([`MIN_LEVEL`]..=[`MAX_LEVEL`]) that `points`
/// fall in: `(level, tile, summary)`, sorted by level then tile.
pub fn tiles_of(points: &[Sample]) -> Vec<(u8, i64, Summary)> {
    let mut sorted: Vec<Sample> = points.to_vec();
    sorted.sort_by_key(|p| p.step);
    // The finest level from the points, each coarser one from the level below (a tile of
    // level l + 1 is 16 consecutive tiles of level l).
    let mut out: Vec<(u8, i64, Summary)> = Vec::new();
    for p in &sorted {
        let tile = tile_of(MIN_LEVEL, p.step);
        match out.last_mut() {
            Some((_, t, s)) if *t == tile => s.add(*p),
            _ => out.push((MIN_LEVEL, tile, Summary::of(*p))),
        }
    }
    let mut below = 0..out.len();
    for level in MIN_LEVEL + 1..=MAX_LEVEL {
        let start = out.len();
        for i in below.clone() {
            let (_, finer, s) = out[i];
            let tile = finer >> FANOUT_BITS;
            match out[start..].last_mut() {
                Some((_, t, acc)) if *t == tile => acc.merge(&s),
                _ => out.push((level, tile, s)),
            }
        }
        below = start..out.len();
    }
    out
}

/// Groups (and points kept per group) for a request of `max_results`: `max_results / 4`
/// groups of up to 4 points; below 8, one group (of up to `max_results` points).
pub fn group_count(max_results: usize) -> usize {
    (max_results / 4).max(1)
}

/// How a step range is cut into groups: `groups` runs of whole tiles of `level`, evenly
/// spaced over the tiles from the one holding the first step to the one holding the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Tile level the groups are made of (0: single steps).
    pub level: u8,
    /// Tile of the first step.
    pub first_tile: i64,
    /// Number of tiles from the first step's to the last step's.
    pub tiles: i128,
    /// Number of groups.
    pub groups: i128,
}

impl Grid {
    /// The grid for the steps `first..=last` cut in `groups` groups: the coarsest level whose
    /// tiles are no wider than an even share of the range, so each group is one or more whole
    /// tiles (up to 16, below the coarsest level).
    pub fn new(first: i64, last: i64, groups: usize) -> Grid {
        let (first, last) = (first.min(last), first.max(last));
        let groups = groups.max(1) as i128;
        let share = ((i128::from(last) - i128::from(first) + 1) / groups).max(1);
        let level = (0..=MAX_LEVEL).rev().find(|&l| tile_width(l) <= share).unwrap_or(0);
        let first_tile = tile_of(level, first);
        let tiles = i128::from(tile_of(level, last)) - i128::from(first_tile) + 1;
        Grid { level, first_tile, tiles, groups: groups.min(tiles) }
    }

    /// The group (0-based) of a step inside the range.
    pub fn group_of(&self, step: i64) -> usize {
        let t = i128::from(tile_of(self.level, step)) - i128::from(self.first_tile);
        let g = (t.clamp(0, self.tiles - 1) * self.groups) / self.tiles;
        g as usize
    }

    /// Number of groups.
    pub fn group_len(&self) -> usize {
        self.groups as usize
    }
}

/// The points a request keeps from the group summaries: each group's first, last, lowest and
/// highest (distinct), or, with fewer than 4 `max_results`, the last, first, highest and lowest
/// of the single group, in that priority, up to `max_results`. Sorted in history order.
pub fn select(summaries: &[Summary], max_results: usize) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::with_capacity(summaries.len() * 4);
    for s in summaries {
        let picks = [s.last, s.first, s.max, s.min];
        let limit = if max_results < 4 { max_results } else { 4 };
        let mut kept = 0;
        for p in picks {
            if kept == limit {
                break;
            }
            if !out[out.len() - kept..].contains(&p) {
                out.push(p);
                kept += 1;
            }
        }
    }
    out.sort_by(Sample::history_cmp);
    out.dedup();
    out
}

/// Downsample `points` (any order) to at most `max_results` (≥ 1): all of them (in history
/// order) when they are that few, else the M4 selection over the [`Grid`] of their step range.
pub fn downsample(points: &[Sample], max_results: usize) -> Vec<Sample> {
    let max_results = max_results.max(1);
    let mut sorted = points.to_vec();
    sorted.sort_by(Sample::history_cmp);
    sorted.dedup();
    if sorted.len() <= max_results {
        return sorted;
    }
    let grid = Grid::new(sorted[0].step, sorted[sorted.len() - 1].step, group_count(max_results));
    let mut groups: Vec<Option<Summary>> = vec![None; grid.group_len()];
    for p in &sorted {
        match &mut groups[grid.group_of(p.step)] {
            Some(s) => s.add(*p),
            slot => *slot = Some(Summary::of(*p)),
        }
    }
    let summaries: Vec<Summary> = groups.into_iter().flatten().collect();
    select(&summaries, max_results)
}

/// A part of a step range, in step order: a run of whole tiles of one level, or single steps
/// (read as points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Tiles `first..=last` of `level`.
    Tiles {
        /// Level (≥ [`MIN_LEVEL`]).
        level: u8,
        /// First tile.
        first: i64,
        /// Last tile.
        last: i64,
    },
    /// The points with steps `first..=last`.
    Steps {
        /// First step.
        first: i64,
        /// Last step.
        last: i64,
    },
}

/// The pieces that cover the steps `lo..=hi` exactly: whole tiles of `level` in the middle,
/// finer tiles towards the ends, single steps at the very ends (fewer than `16^MIN_LEVEL` per
/// end); below [`MIN_LEVEL`], single steps only.
/// Every tile or step of a piece lies inside one tile of `level`.
pub fn decompose(lo: i64, hi: i64, level: u8) -> Vec<Piece> {
    let mut out = Vec::new();
    if lo <= hi {
        decompose_into(i128::from(lo), i128::from(hi), level, &mut out);
    }
    out
}

fn decompose_into(lo: i128, hi: i128, level: u8, out: &mut Vec<Piece>) {
    if level < MIN_LEVEL {
        out.push(Piece::Steps { first: lo as i64, last: hi as i64 });
        return;
    }
    let w = tile_width(level);
    // First tile starting at or after lo, last tile ending at or before hi.
    let first = lo.div_euclid(w) + i128::from(lo.rem_euclid(w) != 0);
    let last = (hi + 1).div_euclid(w) - 1;
    if first > last {
        decompose_into(lo, hi, level - 1, out);
        return;
    }
    if lo < first * w {
        decompose_into(lo, first * w - 1, level - 1, out);
    }
    out.push(Piece::Tiles { level, first: first as i64, last: last as i64 });
    if (last + 1) * w - 1 < hi {
        decompose_into((last + 1) * w, hi, level - 1, out);
    }
}

/// The step range the store covers with pieces for a request over `lo..=hi` whose points span
/// `first..=last` (the first and last steps present): widened to whole tiles of the grid's
/// level where no point can be lost (nothing lies in `lo..first` or `last..=hi` beyond the
/// points), so that as few pieces as possible are partial tiles.
pub fn cover(lo: i64, hi: i64, first: i64, last: i64, level: u8) -> (i64, i64) {
    let start = tile_start(level, tile_of(level, first)).max(i128::from(lo));
    let end = tile_end(level, tile_of(level, last)).min(i128::from(hi));
    (start as i64, end as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(step: i64, timestamp: i64, value: f64) -> Sample {
        Sample { step, timestamp, value }
    }

    /// The summary of a non-empty set, computed the slow way.
    fn summary_of(points: &[Sample]) -> Summary {
        let mut it = points.iter();
        let mut acc = Summary::of(*it.next().unwrap());
        for p in it {
            acc.add(*p);
        }
        acc
    }

    fn points_strategy(max_len: usize) -> impl Strategy<Value = Vec<Sample>> {
        let value = prop_oneof![
            8 => -1000.0f64..1000.0,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            2 => (-3i32..3).prop_map(f64::from),
        ];
        let step = prop_oneof![0i64..50, 0i64..5_000, -200i64..200, Just(i64::MAX), Just(i64::MIN), any::<i64>()];
        proptest::collection::vec((step, 0i64..4, value).prop_map(|(st, ts, v)| s(st, ts, v)), 0..max_len)
    }

    fn dedup_sorted(points: &[Sample]) -> Vec<Sample> {
        let mut v = points.to_vec();
        v.sort_by(Sample::history_cmp);
        v.dedup();
        v
    }

    #[test]
    fn tile_math_is_floor_division() {
        assert_eq!(tile_of(1, 0), 0);
        assert_eq!(tile_of(1, 15), 0);
        assert_eq!(tile_of(1, 16), 1);
        assert_eq!(tile_of(1, -1), -1);
        assert_eq!(tile_of(1, -16), -1);
        assert_eq!(tile_of(1, -17), -2);
        assert_eq!(tile_of(2, 255), 0);
        assert_eq!(tile_of(MAX_LEVEL, i64::MAX), i64::MAX >> 32);
        assert_eq!(tile_width(0), 1);
        assert_eq!(tile_width(3), 4096);
    }

    #[test]
    fn summary_picks_extremes_nan_last() {
        let pts = [s(3, 0, 2.0), s(1, 5, f64::NAN), s(2, 0, -7.0), s(9, 1, 10.0), s(9, 0, 10.0), s(5, 0, -7.0)];
        let sum = summary_of(&pts);
        assert_eq!(sum.first, s(1, 5, f64::NAN));
        assert_eq!(sum.last, s(9, 1, 10.0));
        assert_eq!(sum.min, s(2, 0, -7.0), "ties go to the earliest step");
        assert_eq!(sum.max, s(9, 0, 10.0), "ties go to the earliest timestamp");
        // Only NaN: NaN is lowest and highest.
        let nan = summary_of(&[s(4, 0, f64::NAN), s(2, 0, f64::NAN)]);
        assert_eq!((nan.min.step, nan.max.step), (2, 2));
        assert!(nan.min.value.is_nan());
        // Infinities are values like any other.
        let inf = summary_of(&[s(0, 0, 1.0), s(1, 0, f64::INFINITY), s(2, 0, f64::NEG_INFINITY), s(3, 0, f64::NAN)]);
        assert_eq!((inf.min.value, inf.max.value), (f64::NEG_INFINITY, f64::INFINITY));
    }

    #[test]
    fn a_spike_survives() {
        let mut pts: Vec<Sample> = (0..1_000_000).map(|i| s(i, i, (i % 7) as f64)).collect();
        pts[123_457].value = 1e9;
        pts[987_653].value = -1e9;
        let out = downsample(&pts, 320);
        assert!(out.len() <= 320, "{}", out.len());
        assert!(out.contains(&s(123_457, 123_457, 1e9)));
        assert!(out.contains(&s(987_653, 987_653, -1e9)));
        assert_eq!(out.first().unwrap().step, 0);
        assert_eq!(out.last().unwrap().step, 999_999);
    }

    #[test]
    fn small_max_results() {
        let pts: Vec<Sample> = (0..100).map(|i| s(i, 0, if i == 50 { 99.0 } else { 0.0 })).collect();
        assert_eq!(downsample(&pts, 1), vec![s(99, 0, 0.0)], "one point: the last, as MLflow");
        assert_eq!(downsample(&pts, 2), vec![s(0, 0, 0.0), s(99, 0, 0.0)]);
        assert_eq!(downsample(&pts, 3), vec![s(0, 0, 0.0), s(50, 0, 99.0), s(99, 0, 0.0)]);
        assert_eq!(downsample(&[], 5), vec![]);
        assert_eq!(downsample(&pts, 0).len(), 1, "0 is taken as 1");
    }

    #[test]
    fn grid_levels_and_groups() {
        // 1,000,000 steps in 80 groups: shares of 12,500 steps, tiles of 4,096.
        let g = Grid::new(0, 999_999, 80);
        assert_eq!(g.level, 3);
        assert_eq!(g.tiles, 245);
        assert_eq!(g.group_of(0), 0);
        assert_eq!(g.group_of(999_999), 79);
        // Fewer steps than groups: single steps, one group each.
        let g = Grid::new(10, 19, 80);
        assert_eq!((g.level, g.tiles, g.groups), (0, 10, 10));
        assert_eq!(g.group_of(19), 9);
        // The whole i64 range does not overflow.
        let g = Grid::new(i64::MIN, i64::MAX, 80);
        assert_eq!(g.level, MAX_LEVEL);
        assert_eq!(g.group_of(i64::MIN), 0);
        assert_eq!(g.group_of(i64::MAX), 79);
    }

    #[test]
    fn decompose_examples() {
        assert_eq!(decompose(0, 255, 2), vec![Piece::Tiles { level: 2, first: 0, last: 0 }]);
        assert_eq!(
            decompose(5, 600, 2),
            vec![
                Piece::Steps { first: 5, last: 255 },
                Piece::Tiles { level: 2, first: 1, last: 1 },
                Piece::Steps { first: 512, last: 600 },
            ]
        );
        assert_eq!(
            decompose(5, 70_000, 4),
            vec![
                Piece::Steps { first: 5, last: 255 },
                Piece::Tiles { level: 2, first: 1, last: 15 },
                Piece::Tiles { level: 3, first: 1, last: 16 },
                Piece::Tiles { level: 2, first: 272, last: 272 },
                Piece::Steps { first: 69_888, last: 70_000 },
            ]
        );
        // No whole tile of the top level: finer ones.
        assert_eq!(
            decompose(5, 5_000, 3),
            vec![
                Piece::Steps { first: 5, last: 255 },
                Piece::Tiles { level: 2, first: 1, last: 18 },
                Piece::Steps { first: 4_864, last: 5_000 },
            ]
        );
        // Below the finest level stored: single steps only.
        assert_eq!(decompose(5, 600, 1), vec![Piece::Steps { first: 5, last: 600 }]);
        assert_eq!(decompose(3, 9, 3), vec![Piece::Steps { first: 3, last: 9 }]);
        assert_eq!(decompose(9, 3, 3), vec![]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn downsample_properties(points in points_strategy(400), max_results in 1usize..100) {
            let out = downsample(&points, max_results);
            let all = dedup_sorted(&points);
            // Output is a subset of the input, in history order, no repeats, bounded.
            for p in &out {
                prop_assert!(all.contains(p), "{p:?} is not an input point");
            }
            prop_assert!(out.windows(2).all(|w| w[0].history_cmp(&w[1]).is_lt()));
            prop_assert!(out.len() <= max_results);
            // Deterministic, whatever the input order.
            let mut reversed = points.clone();
            reversed.reverse();
            prop_assert_eq!(&downsample(&reversed, max_results), &out);
            if all.len() <= max_results {
                // Zoomed in enough: everything.
                prop_assert_eq!(&out, &all);
            } else if !all.is_empty() {
                let global = summary_of(&all);
                prop_assert!(out.contains(&global.last), "last point kept");
                if max_results >= 2 {
                    prop_assert!(out.contains(&global.first), "first point kept");
                }
                if max_results >= 4 {
                    prop_assert!(out.contains(&global.min), "lowest point kept");
                    prop_assert!(out.contains(&global.max), "highest point kept");
                }
            }
        }

        #[test]
        fn summaries_merge_in_any_grouping(points in points_strategy(60), split in 0usize..60) {
            prop_assume!(!points.is_empty());
            let split = split % points.len();
            let whole = summary_of(&points);
            let (a, b) = points.split_at(split);
            let mut merged = if a.is_empty() { summary_of(b) } else { summary_of(a) };
            if !a.is_empty() && !b.is_empty() {
                merged.merge(&summary_of(b));
            }
            // Idempotent: merging a part again changes nothing.
            merged.merge(&summary_of(&points[..split.max(1)]));
            prop_assert_eq!(merged, whole);
        }

        #[test]
        fn tiles_are_the_summaries_of_their_steps(points in points_strategy(200)) {
            let tiles = tiles_of(&points);
            for &(level, tile, summary) in &tiles {
                let inside: Vec<Sample> = points.iter().copied().filter(|p| tile_of(level, p.step) == tile).collect();
                prop_assert_eq!(summary, summary_of(&inside));
            }
            let finest: std::collections::BTreeSet<i64> = points.iter().map(|p| tile_of(MIN_LEVEL, p.step)).collect();
            prop_assert_eq!(tiles.iter().filter(|t| t.0 == MIN_LEVEL).count(), finest.len());
            prop_assert!(tiles.iter().all(|t| (MIN_LEVEL..=MAX_LEVEL).contains(&t.0)));
        }

        #[test]
        fn pieces_cover_the_range_exactly(lo in -100_000i64..100_000, len in 0i64..200_000, level in 0u8..=4) {
            let hi = lo + len;
            let pieces = decompose(lo, hi, level);
            let mut next = i128::from(lo);
            let mut steps_total = 0;
            for p in &pieces {
                let (start, end) = match *p {
                    Piece::Tiles { level: l, first, last } => {
                        prop_assert!(l >= MIN_LEVEL && l <= level.max(MIN_LEVEL));
                        (tile_start(l, first), tile_end(l, last))
                    }
                    Piece::Steps { first, last } => {
                        steps_total += i128::from(last) - i128::from(first) + 1;
                        (i128::from(first), i128::from(last))
                    }
                };
                prop_assert_eq!(start, next);
                prop_assert!(end >= start);
                next = end + 1;
            }
            prop_assert_eq!(next, i128::from(hi) + 1);
            let end_steps = 2 * (tile_width(MIN_LEVEL) - 1);
            if level >= MIN_LEVEL {
                prop_assert!(steps_total <= end_steps, "at most 16^MIN_LEVEL - 1 single steps per end");
            } else {
                prop_assert_eq!(steps_total, i128::from(len) + 1, "below the finest level, single steps only");
            }
        }

        #[test]
        fn grid_groups_are_ordered_and_full(first in -1_000_000i64..1_000_000, len in 0i64..5_000_000, groups in 1usize..300) {
            let last = first + len;
            let g = Grid::new(first, last, groups);
            prop_assert!(g.group_len() >= 1 && g.group_len() <= groups);
            prop_assert_eq!(g.group_of(first), 0);
            prop_assert_eq!(g.group_of(last), g.group_len() - 1);
            if g.level < MAX_LEVEL {
                prop_assert!(g.tiles <= 16 * groups as i128 + 16, "{g:?}");
            }
            let mid = first + len / 2;
            prop_assert!(g.group_of(first) <= g.group_of(mid) && g.group_of(mid) <= g.group_of(last));
        }
    }
}
