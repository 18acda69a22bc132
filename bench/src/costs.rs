//! Costs per operation, the units that don't wobble with the machine's load: instructions
//! (from callgrind, `--callgrind`), allocations and bytes allocated (from the counting
//! allocator). Scenarios collect them here by case and column and turn them into tables.

use std::collections::BTreeMap;

use crate::measure::{Counted, Samples};
use crate::report::{Goal, Row};

/// A cost of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cost {
    /// Instructions executed by the client (callgrind's `Ir`), every client thread included.
    Instructions,
    /// Allocations (a `realloc` counts as one), every thread of the process included.
    Allocations,
    /// Bytes allocated, every thread of the process included.
    Bytes,
}

impl Cost {
    /// The costs the counting allocator measures.
    pub const ALLOCATOR: [Cost; 2] = [Cost::Allocations, Cost::Bytes];
    /// Every cost, instructions first (the `--callgrind` mode).
    pub const ALL: [Cost; 3] = [Cost::Instructions, Cost::Allocations, Cost::Bytes];

    /// How the cost is named in a row label.
    pub fn name(self) -> &'static str {
        match self {
            Cost::Instructions => "instructions",
            Cost::Allocations => "allocations",
            Cost::Bytes => "bytes allocated",
        }
    }
}

/// Costs per operation by case, column and cost, one sample per repetition.
#[derive(Debug, Default)]
pub struct CostSamples(BTreeMap<(usize, Cost, usize), Samples>);

impl CostSamples {
    /// Adds one repetition's `value` of `cost` for `case` and `column`.
    pub fn push(&mut self, case: usize, column: usize, cost: Cost, value: f64) {
        self.0.entry((case, cost, column)).or_default().push(value);
    }

    /// Adds allocations and bytes per operation from `counted`.
    pub fn push_counted(&mut self, case: usize, column: usize, counted: &Counted) {
        self.push(
            case,
            column,
            Cost::Allocations,
            counted.allocations_per_op(),
        );
        self.push(case, column, Cost::Bytes, counted.bytes_per_op());
    }

    /// The samples of `cost` for `case` in each of `columns`; `None` where nothing was
    /// measured.
    pub fn cells(&self, case: usize, cost: Cost, columns: &[usize]) -> Vec<Option<Samples>> {
        columns
            .iter()
            .map(|&column| self.0.get(&(case, cost, column)).cloned())
            .collect()
    }
}

/// A row "`case`: `cost` per `per`".
pub fn row(case: &str, cost: Cost, per: &str, cells: Vec<Option<Samples>>) -> Row {
    Row::new(format!("{case}: {} per {per}", cost.name()), cells)
}

/// The column (from 1) of the peer with the lowest median of `row`, and its ratio coredb/peer.
pub fn cheapest_peer(row: &Row) -> Option<(usize, f64)> {
    let (column, _) = (1..row.cells.len())
        .filter_map(|j| Some((j, row.median(j)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    Some((column, row.ratio(0, column)?))
}

/// Adds the goal "coredb no dearer than the cheapest peer" to `row`, a `cost` per operation
/// (none for bytes); `name` names the peer of a column.
pub fn goal_cheapest_peer(row: &mut Row, cost: Cost, name: impl Fn(usize) -> &'static str) {
    if cost == Cost::Bytes {
        return;
    }
    let cheapest = cheapest_peer(row);
    row.goals.push(Goal::at_most(
        format!(
            "coredb/cheapest peer ({})",
            cheapest.map_or("?", |(j, _)| name(j))
        ),
        cheapest.map(|(_, ratio)| ratio),
        1.0,
    ));
}

/// What the counting allocator counts, for the notes under a table.
pub const ALLOCATOR_NOTE: &str = "Allocations and bytes come from the harness's counting \
     `#[global_allocator]`, which counts every thread of the process: the connection tasks \
     (tokio-postgres's `Connection`, coredb's I/O tasks) and the runtime's own bookkeeping are \
     included, as they are part of what a statement costs.";
