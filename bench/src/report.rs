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

/// A goal: a ratio that must reach a threshold.
pub struct Goal {
    /// What is compared, e.g. "coredb/deadpool".
    pub what: String,
    /// The measured ratio, `None` when a side was not measured.
    pub ratio: Option<f64>,
    /// The least ratio that meets the goal.
    pub at_least: f64,
}

impl Goal {
    /// A goal on `ratio`.
    pub fn new(what: impl Into<String>, ratio: Option<f64>, at_least: f64) -> Self {
        Goal {
            what: what.into(),
            ratio,
            at_least,
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub fn met(&self) -> Option<bool> {
        self.ratio.map(|r| r >= self.at_least)
    }

    /// The threshold: two decimals, or three when two would round it (1/1.1 = 0.909).
    fn threshold(&self) -> String {
        let two = format!("{:.2}", self.at_least);
        if (two.parse::<f64>().unwrap_or(0.0) - self.at_least).abs() < 1e-9 {
            two
        } else {
            format!("{:.3}", self.at_least)
        }
    }

    /// The ratio, with as many decimals as the threshold, or more where it would look equal.
    fn shown_ratio(&self) -> String {
        let Some(ratio) = self.ratio else {
            return "n/a".to_owned();
        };
        let mut decimals = self.threshold().split('.').nth(1).map_or(2, str::len);
        while decimals < 6
            && format!("{ratio:.decimals$}") == format!("{:.decimals$}", self.at_least)
            && ratio != self.at_least
        {
            decimals += 1;
        }
        format!("{ratio:.decimals$}")
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
            "{} ≥ {}: {} ({})",
            self.what,
            self.threshold(),
            self.result(),
            self.shown_ratio()
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
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "## {}\n", self.title);
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
    render_goals(&mut out, tables);
    for table in tables {
        table.render(&mut out);
    }
    out
}

fn render_goals(out: &mut String, tables: &[Table]) {
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
        "## Goals\n\n{met} met, {missed} missed, {unmeasured} not measured (ratios from this run).\n"
    );
    out.push_str("| scenario | case | goal | ratio | result |\n|---|---|---|---:|---|\n");
    for (table, row, goal) in goals {
        let scenario = table.title.split('.').next().unwrap_or(&table.title);
        let _ = writeln!(
            out,
            "| {scenario} | {} | {} ≥ {} | {} | {} |",
            row.label,
            goal.what,
            goal.threshold(),
            goal.shown_ratio(),
            goal.result()
        );
    }
    out.push('\n');
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
    }
}
