//! The report: one Markdown table per scenario (medians, ratios coredb/peer, goals marked met
//! or missed), a summary of the goals, and the machine it ran on.

use std::fmt::Write as _;

use crate::machine::Machine;
use crate::measure::Samples;
use crate::options::Options;

/// The results of one scenario.
pub struct Table {
    /// Heading, e.g. "S1. Pool overhead, no database".
    pub title: String,
    /// What was measured and how (Markdown).
    pub description: String,
    /// Unit of the cells, e.g. "checkouts/s".
    pub unit: String,
    /// True for throughputs; false for costs (memory, allocations), where lower is better.
    pub higher_is_better: bool,
    /// Column names; the first is coredb, the rest are the peers.
    pub columns: Vec<String>,
    /// One row per case.
    pub rows: Vec<Row>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
}

/// One case of a scenario.
pub struct Row {
    /// What the case is, e.g. "64 workers".
    pub label: String,
    /// One entry per column; `None` where a contender did not run.
    pub cells: Vec<Option<Samples>>,
    /// The goals this case is held to.
    pub goals: Vec<Goal>,
}

/// A goal: a measured figure (a ratio coredb/peer, or an absolute cost) held to a bound.
pub struct Goal {
    /// What is compared, e.g. "coredb/deadpool".
    pub what: String,
    /// The measured figure, `None` when a side was not measured.
    pub measured: Option<f64>,
    /// The bound that meets the goal.
    pub bound: Bound,
}

/// Which side of its threshold a goal is met on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Met at this value or above (throughputs).
    AtLeast(f64),
    /// Met at this value or below (costs: allocations, bytes, instructions).
    AtMost(f64),
}

impl Goal {
    /// A goal met when `ratio` reaches `at_least`.
    pub fn new(what: impl Into<String>, ratio: Option<f64>, at_least: f64) -> Self {
        Goal {
            what: what.into(),
            measured: ratio,
            bound: Bound::AtLeast(at_least),
        }
    }

    /// A goal met when `measured` stays at or below `at_most`.
    pub fn at_most(what: impl Into<String>, measured: Option<f64>, at_most: f64) -> Self {
        Goal {
            what: what.into(),
            measured,
            bound: Bound::AtMost(at_most),
        }
    }

    fn limit(&self) -> f64 {
        match self.bound {
            Bound::AtLeast(limit) | Bound::AtMost(limit) => limit,
        }
    }

    fn sign(&self) -> &'static str {
        match self.bound {
            Bound::AtLeast(_) => "≥",
            Bound::AtMost(_) => "≤",
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub fn met(&self) -> Option<bool> {
        self.measured.map(|m| match self.bound {
            Bound::AtLeast(limit) => m >= limit,
            Bound::AtMost(limit) => m <= limit,
        })
    }

    /// The threshold: two decimals, or three when two would round it (1/1.1 = 0.909), none
    /// from 100 up (1024 bytes).
    fn threshold(&self) -> String {
        let limit = self.limit();
        if limit >= 100.0 && limit.fract() == 0.0 {
            return format!("{limit:.0}");
        }
        let two = format!("{limit:.2}");
        if (two.parse::<f64>().unwrap_or(0.0) - limit).abs() < 1e-9 {
            two
        } else {
            format!("{limit:.3}")
        }
    }

    /// The measured figure, with as many decimals as the threshold, or more where it would
    /// look equal.
    fn shown_measured(&self) -> String {
        let Some(measured) = self.measured else {
            return "n/a".to_owned();
        };
        let limit = self.limit();
        let mut decimals = self.threshold().split('.').nth(1).map_or(2, str::len);
        if limit >= 100.0 {
            decimals = 0;
        }
        while decimals < 6
            && format!("{measured:.decimals$}") == format!("{limit:.decimals$}")
            && measured != limit
        {
            decimals += 1;
        }
        format!("{measured:.decimals$}")
    }

    fn result(&self) -> &'static str {
        match self.met() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }

    fn verdict(&self) -> String {
        format!(
            "{} {} {}: {} ({})",
            self.what,
            self.sign(),
            self.threshold(),
            self.result(),
            self.shown_measured()
        )
    }
}

impl Row {
    /// A row with its cells and no goals yet.
    pub fn new(label: impl Into<String>, cells: Vec<Option<Samples>>) -> Self {
        Row {
            label: label.into(),
            cells,
            goals: Vec::new(),
        }
    }

    /// The median of column `index`.
    pub fn median(&self, index: usize) -> Option<f64> {
        self.cells.get(index)?.as_ref()?.median()
    }

    /// Median of column `a` divided by median of column `b`.
    pub fn ratio(&self, a: usize, b: usize) -> Option<f64> {
        let (a, b) = (self.median(a)?, self.median(b)?);
        (b > 0.0).then(|| a / b)
    }
}

impl Table {
    /// Writes the table under a heading of `level` (2 for `##`).
    fn render(&self, out: &mut String, level: usize) {
        let _ = writeln!(out, "{} {}\n", "#".repeat(level), self.title);
        let _ = writeln!(out, "{}\n", self.description.trim());
        let better = if self.higher_is_better {
            "higher is better; ratio > 1 means coredb is faster"
        } else {
            "lower is better; ratio < 1 means coredb uses less"
        };
        let _ = writeln!(
            out,
            "Medians in {} ({better}); ± is half the range over the repetitions.\n",
            self.unit
        );
        let peers = &self.columns[1..];
        let mut header = vec!["case".to_owned()];
        header.extend(self.columns.iter().cloned());
        header.extend(peers.iter().map(|p| format!("{}/{p}", self.columns[0])));
        header.push("goals".to_owned());
        let _ = writeln!(out, "| {} |", header.join(" | "));
        // Numbers right-aligned; the case and the goals left-aligned.
        let last = header.len() - 1;
        let align: String = (0..header.len())
            .map(|i| if i == 0 || i == last { "---|" } else { "---:|" })
            .collect();
        let _ = writeln!(out, "|{align}");
        for row in &self.rows {
            let mut cells = vec![row.label.clone()];
            cells.extend(row.cells.iter().map(|c| match c {
                Some(samples) => format_samples(samples),
                None => "n/a".to_owned(),
            }));
            cells.extend((1..self.columns.len()).map(|j| match row.ratio(0, j) {
                Some(r) => format!("{r:.2}x"),
                None => "n/a".to_owned(),
            }));
            let goals = if row.goals.is_empty() {
                "–".to_owned()
            } else {
                row.goals
                    .iter()
                    .map(Goal::verdict)
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            cells.push(goals);
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out.push('\n');
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
    }
}

/// A value with three significant digits and a k/M suffix.
pub fn format_value(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

fn format_samples(samples: &Samples) -> String {
    let Some(median) = samples.median() else {
        return "n/a".to_owned();
    };
    match samples.spread() {
        Some(spread) => format!("{} ±{:.0}%", format_value(median), spread * 100.0),
        None => format_value(median),
    }
}

/// The whole document: header, machine, goals summary, and every table.
pub fn render_document(
    options: &Options,
    machine: &Machine,
    server: &str,
    tables: &[Table],
) -> String {
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "coredb side by side with sqlx, deadpool-postgres, bb8 and plain tokio-postgres, with \
         pgbench (libpq, C) as the reference: every contender against the same server in one \
         run, each measurement repeated with the contenders interleaved, medians reported. The \
         machine is shared and noisy, so only the ratios from one run mean much, and ratios \
         within about 10% of a goal can land on either side of it from one run to the next: \
         the ± spreads show how much each median moved.\n\n",
    );
    if options.quick {
        out.push_str(
            "> **Quick mode**: one short repetition per measurement, a smoke test of the \
             harness. These numbers are not meaningful.\n\n",
        );
    }
    let _ = writeln!(
        out,
        "Reproduce (from the workspace root; starts an embedded PostgreSQL unless \
         `DATABASE_URL` or `POSTGRES_HOST` is set, needs `pgbench` for the C reference):\n\n\
         ```sh\n{}\n```\n",
        options.command_line()
    );
    out.push_str(
        "The costs per operation in units that don't wobble (instructions from callgrind, \
         allocations and bytes from the counting allocator; section \"Deterministic units\" \
         below) come from a separate mode, which needs valgrind in PATH and is not part of \
         `--quick` or CI; it replaces only its own section of the file, and a timed run keeps \
         that section:\n\n\
         ```sh\ncargo run --release -p coredb-bench -- --callgrind --reps 2 --out \
         docs/benchmarks.md\n```\n\n",
    );
    out.push_str("## Machine\n\n");
    machine.render(&mut out, server);
    let _ = writeln!(
        out,
        "- Method: {} repetition(s) of every measurement, {} ms each (pool overhead: {} \
         checkouts each), contenders in rotating order; a {} ms untimed warm-up before each \
         measurement; pgbench `-M prepared -T {}`.\n",
        options.budget.reps,
        options.budget.measure.as_millis(),
        options.budget.pool_checkouts,
        options.budget.warmup.as_millis(),
        options.budget.pgbench_seconds
    );
    render_goals(&mut out, "## Goals", tables);
    for table in tables {
        table.render(&mut out, 2);
    }
    out
}

fn render_goals(out: &mut String, heading: &str, tables: &[Table]) {
    let goals: Vec<(&Table, &Row, &Goal)> = tables
        .iter()
        .flat_map(|t| {
            t.rows
                .iter()
                .flat_map(move |r| r.goals.iter().map(move |g| (t, r, g)))
        })
        .collect();
    let met = goals
        .iter()
        .filter(|(_, _, g)| g.met() == Some(true))
        .count();
    let missed = goals
        .iter()
        .filter(|(_, _, g)| g.met() == Some(false))
        .count();
    let unmeasured = goals.len() - met - missed;
    let _ = writeln!(
        out,
        "{heading}\n\n{met} met, {missed} missed, {unmeasured} not measured (from this run).\n"
    );
    out.push_str("| scenario | case | goal | measured | result |\n|---|---|---|---:|---|\n");
    for (table, row, goal) in goals {
        let scenario = table.title.split('.').next().unwrap_or(&table.title);
        let _ = writeln!(
            out,
            "| {scenario} | {} | {} {} {} | {} | {} |",
            row.label,
            goal.what,
            goal.sign(),
            goal.threshold(),
            goal.shown_measured(),
            goal.result()
        );
    }
    out.push('\n');
}

/// First line of the section written by `--callgrind`; a full run keeps the section.
const SECTION_BEGIN: &str = "<!-- coredb-bench --callgrind: begin (kept by timed runs) -->";
/// Last line of that section.
const SECTION_END: &str = "<!-- coredb-bench --callgrind: end -->";

/// The `--callgrind` section: a heading, `intro` (Markdown), a summary of its goals and its
/// tables one level down, between markers so that later runs can find it.
pub fn render_section(title: &str, intro: &str, tables: &[Table]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{SECTION_BEGIN}\n## {title}\n\n{}\n", intro.trim());
    render_goals(
        &mut out,
        &format!("### Goals in {}", title.to_lowercase()),
        tables,
    );
    for table in tables {
        table.render(&mut out, 3);
    }
    let _ = writeln!(out, "{SECTION_END}");
    out
}

/// The section of `document` between the markers, markers included.
fn find_section(document: &str) -> Option<&str> {
    let begin = document.find(SECTION_BEGIN)?;
    let end = document[begin..].find(SECTION_END)? + begin + SECTION_END.len();
    Some(&document[begin..end])
}

/// `document` with `section` in place of the one it has, or appended when it has none.
pub fn splice_section(document: &str, section: &str) -> String {
    let section = section.trim_end();
    match find_section(document) {
        Some(old) => document.replacen(old, section, 1),
        None if document.trim().is_empty() => format!("{section}\n"),
        None => format!("{}\n\n{section}\n", document.trim_end()),
    }
}

/// `document` (a timed run's) with the `--callgrind` section that `previous` (the file it
/// replaces) held, so that the two kinds of run can share one file.
pub fn keep_section(document: &str, previous: &str) -> String {
    match find_section(previous) {
        Some(section) => splice_section(document, section),
        None => document.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_values() {
        assert_eq!(format_value(1_234_567.0), "1.23M");
        assert_eq!(format_value(78_123.0), "78.1k");
        assert_eq!(format_value(9_876.0), "9876");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(1.5), "1.50");
    }

    #[test]
    fn goals_compare_ratios() {
        assert_eq!(Goal::new("a/b", Some(1.0), 1.0).met(), Some(true));
        assert_eq!(Goal::new("a/b", Some(0.99), 1.0).met(), Some(false));
        assert_eq!(Goal::new("a/b", None, 1.0).met(), None);
        let within = Goal::new("a/b", Some(0.9088), 1.0 / 1.1);
        assert_eq!(within.met(), Some(false));
        assert_eq!(within.verdict(), "a/b ≥ 0.909: **missed** (0.9088)");
        let cost = Goal::at_most("bytes", Some(6124.0), 1024.0);
        assert_eq!(cost.met(), Some(false));
        assert_eq!(cost.verdict(), "bytes ≤ 1024: **missed** (6124)");
        assert_eq!(Goal::at_most("a/b", Some(0.98), 1.0).met(), Some(true));
    }

    #[test]
    fn sections_are_replaced_and_kept() {
        let section = |body: &str| format!("{SECTION_BEGIN}\n{body}\n{SECTION_END}\n");
        let old = format!("# Timed\n\n{}", section("old"));
        assert_eq!(
            splice_section(&old, &section("new")),
            format!("# Timed\n\n{}", section("new"))
        );
        assert_eq!(
            splice_section("# Timed\n", &section("new")),
            format!("# Timed\n\n{}", section("new"))
        );
        assert_eq!(
            keep_section("# Timed again\n", &old),
            format!("# Timed again\n\n{}", section("old"))
        );
        assert_eq!(keep_section("# Timed\n", "# No section\n"), "# Timed\n");
    }
}
