//! `--callgrind`: costs per operation in units that don't wobble with the machine's load.
//!
//! For every case of scenarios 1 to 4 and every contender, the harness runs child processes of
//! its own binary (`coredb-bench --fixed-run ...`), one contender each, on a current-thread
//! tokio runtime: a warm-up outside the count, then a fixed number of operations inside
//! [`coredb_bench_measured_ops`]. One child runs natively with the counting allocator on
//! (allocations and bytes per operation); another runs under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=coredb_bench_measured_ops`,
//! which counts the instructions executed inside that function only (`Ir`, read from the
//! `totals:` line of its output file). On a current-thread runtime the connection tasks run on
//! the measured thread, so the count is the client's whole cost and nothing else: the server
//! runs natively, outside valgrind. The section goes to stdout and, with `--out`, replaces the
//! section of the same name in that file (or is appended to it); a timed run writing the same
//! file keeps it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use crate::costs::{Cost, CostSamples};
use crate::measure::{throughput, Counted, Until, Workers, Workload};
use crate::report::{self, Table};
use crate::scenarios::{autocommit, checkout_query, pool_overhead, rows_inserts};
use crate::server::{Server, Target};
use crate::{alloc_counter, Result};

/// The hidden first argument that turns the binary into a fixed-count child.
pub const CHILD_FLAG: &str = "--fixed-run";

/// The function callgrind counts: its name, unmangled, for `--toggle-collect`.
const MEASURED_SYMBOL: &str = "coredb_bench_measured_ops";

/// Scenarios with fixed-count runs.
pub const SCENARIOS: [u8; 4] = [1, 2, 3, 4];

/// Settings of a `--callgrind` run.
#[derive(Debug, Clone)]
pub struct CallgrindOptions {
    /// Scenarios to run (1 to 4).
    pub only: Vec<u8>,
    /// Operations counted per child (heavy cases of S4 run a fraction of them).
    pub ops: u64,
    /// Operations run before counting starts.
    pub warmup: u64,
    /// Runs of each child; more than one shows how much the figures move.
    pub reps: usize,
    /// Where to write the section, if anywhere.
    pub out: Option<PathBuf>,
}

impl CallgrindOptions {
    /// The default operation count.
    pub const OPS: u64 = 2000;
    /// The default warm-up.
    pub const WARMUP: u64 = 200;
}

/// What a child counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    /// Allocations and bytes, natively, with the counting allocator.
    Allocations,
    /// Instructions, under callgrind.
    Instructions,
}

impl Counter {
    fn arg(self) -> &'static str {
        match self {
            Counter::Allocations => "allocations",
            Counter::Instructions => "instructions",
        }
    }
}

/// A child's task: one case of one scenario by one contender (column).
#[derive(Debug)]
pub struct Child {
    scenario: u8,
    case: usize,
    column: usize,
    warmup: u64,
    ops: u64,
    counter: Counter,
}

impl Child {
    /// Parses `<scenario> <case> <column> <warmup> <ops> allocations|instructions`.
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let args: Vec<String> = args.collect();
        let [scenario, case, column, warmup, ops, counter] = &args[..] else {
            return Err(format!("{CHILD_FLAG}: expected 6 arguments, got {args:?}"));
        };
        let number = |s: &String| {
            s.parse::<u64>()
                .map_err(|_| format!("{CHILD_FLAG}: {s:?} is not a number"))
        };
        let counter = match counter.as_str() {
            "allocations" => Counter::Allocations,
            "instructions" => Counter::Instructions,
            other => return Err(format!("{CHILD_FLAG}: unknown counter {other:?}")),
        };
        Ok(Child {
            scenario: number(scenario)? as u8,
            case: number(case)? as usize,
            column: number(column)? as usize,
            warmup: number(warmup)?,
            ops: number(ops)?,
            counter,
        })
    }

    /// In the child process: runs the task and prints `ops allocations bytes` (allocations) or
    /// `ops` (instructions, which callgrind writes to its own file).
    pub fn run(self) -> Result<()> {
        let fixed = FixedRun {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            target: Target::from_parent()?,
            warmup: self.warmup,
            ops: self.ops,
            counter: self.counter,
        };
        match self.scenario {
            1 => pool_overhead::run_fixed(&fixed, self.case, self.column),
            2 => checkout_query::run_fixed(&fixed, self.case, self.column),
            3 => autocommit::run_fixed(&fixed, self.column),
            4 => rows_inserts::run_fixed(&fixed, self.case, self.column),
            other => Err(format!("scenario {other} has no fixed-count runs").into()),
        }
    }
}

/// A child's runtime, server and counts, handed to the scenario that runs the operations.
pub struct FixedRun {
    runtime: tokio::runtime::Runtime,
    /// The scratch database.
    pub target: Target,
    /// Operations before counting.
    pub warmup: u64,
    /// Operations counted.
    pub ops: u64,
    counter: Counter,
}

impl FixedRun {
    /// Runs `future` on the child's current-thread runtime, uncounted (setup, warm-up).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `measured`, which returns how many operations it did, as the counted part, and
    /// prints what the parent reads.
    pub fn measure(&self, measured: impl Future<Output = Result<u64>>) -> Result<()> {
        let mut measured = pin!(measured);
        match self.counter {
            Counter::Allocations => {
                let counting = alloc_counter::start();
                let ops = self.runtime.block_on(measured);
                let (allocations, bytes) = counting.stop();
                println!("{} {allocations} {bytes}", ops?);
            }
            Counter::Instructions => {
                let ops = coredb_bench_measured_ops(&self.runtime, measured.as_mut())?;
                println!("{ops}");
            }
        }
        Ok(())
    }

    /// Warms `work` up from `workers` tasks, then counts [`FixedRun::ops`] units of it
    /// (rounded up to a multiple of `workers`), the tasks' spawning excluded.
    pub fn workload<W: Workload>(&self, work: &Arc<W>, workers: usize) -> Result<()> {
        self.block_on(throughput(work, workers, Until::Total(self.warmup)))?;
        let workers = self.block_on(async {
            let workers = Workers::spawn(work, workers, Until::Total(self.ops));
            // The tasks run up to the gate before counting starts.
            tokio::task::yield_now().await;
            workers
        });
        self.measure(async { Ok(workers.run().await?.0) })
    }
}

/// The counted operations: callgrind collects from entry to exit of this function
/// (`--toggle-collect`), so it must keep its name and never be inlined.
#[no_mangle]
#[inline(never)]
pub fn coredb_bench_measured_ops(
    runtime: &tokio::runtime::Runtime,
    ops: Pin<&mut dyn Future<Output = Result<u64>>>,
) -> Result<u64> {
    runtime.block_on(ops)
}

/// The cases and contenders of `scenario`: (case, column, what runs).
fn units(scenario: u8) -> Vec<(usize, usize, String)> {
    match scenario {
        1 => pool_overhead::fixed_units(),
        2 => checkout_query::fixed_units(),
        3 => autocommit::fixed_units(),
        _ => rows_inserts::fixed_units(),
    }
}

/// Operations of `case` in `scenario` for `ops`: S4's fetches and inserts of many rows run
/// fewer, so that every child costs about the same.
fn scaled(scenario: u8, case: usize, ops: u64) -> u64 {
    match scenario {
        4 => rows_inserts::fixed_ops(case, ops),
        _ => ops,
    }
}

/// Runs `valgrind --version`; an error naming the package when it is missing.
fn valgrind_version() -> Result<String> {
    let output = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|err| {
            format!(
                "--callgrind needs valgrind in PATH ({err}); install it, e.g. `apt-get install \
                 valgrind`"
            )
        })?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// What a child counted.
enum Counts {
    /// Allocations and bytes of its operations.
    Allocations(Counted),
    /// Instructions of its operations.
    Instructions { ops: u64, instructions: u64 },
}

/// Runs one child; returns what it counted.
fn run_child(
    target: &Target,
    dir: &Path,
    scenario: u8,
    (case, column): (usize, usize),
    (warmup, ops): (u64, u64),
    counter: Counter,
) -> Result<Counts> {
    let exe = std::env::current_exe()?;
    let out_file = dir.join(format!("s{scenario}-{case}-{column}.callgrind"));
    let mut command = match counter {
        Counter::Allocations => Command::new(&exe),
        Counter::Instructions => {
            let mut valgrind = Command::new("valgrind");
            valgrind
                .arg("--tool=callgrind")
                .arg("--quiet")
                .arg(format!("--callgrind-out-file={}", out_file.display()))
                .arg("--collect-atstart=no")
                .arg(format!("--toggle-collect={MEASURED_SYMBOL}"))
                .arg(&exe);
            valgrind
        }
    };
    command.arg(CHILD_FLAG).args([
        scenario.to_string(),
        case.to_string(),
        column.to_string(),
        warmup.to_string(),
        ops.to_string(),
        counter.arg().to_owned(),
    ]);
    target.pass_to(&mut command);
    let output = command.output()?;
    let numbers = crate::measure::child_numbers(
        &output,
        &format!(
            "{CHILD_FLAG} {scenario} {case} {column} ({})",
            counter.arg()
        ),
    )?;
    match (counter, &numbers[..]) {
        (Counter::Allocations, &[ops, allocations, bytes]) => Ok(Counts::Allocations(Counted {
            ops,
            allocations,
            bytes,
        })),
        (Counter::Instructions, &[ops]) => {
            let text = std::fs::read_to_string(&out_file)?;
            let _ = std::fs::remove_file(&out_file);
            let instructions = total_instructions(&text)
                .ok_or_else(|| format!("no totals: line in {}", out_file.display()))?;
            Ok(Counts::Instructions { ops, instructions })
        }
        _ => Err(format!(
            "{CHILD_FLAG}: unexpected output {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
        .into()),
    }
}

/// The `Ir` total of a callgrind output file (`totals:`, or `summary:` in older files).
fn total_instructions(text: &str) -> Option<u64> {
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    line("totals:").or_else(|| line("summary:"))
}

/// Runs the `--callgrind` mode.
pub fn run(options: &CallgrindOptions) -> Result<()> {
    let started = Instant::now();
    let valgrind = valgrind_version()?;
    let server = Server::start()?;
    eprintln!("coredb-bench: server: {}", server.describe());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let target = runtime.block_on(server.prepare())?;
    let dir = std::env::temp_dir().join(format!("coredb-bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tables = run_children(options, &runtime, &target, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let dropped = runtime.block_on(server.cleanup(&target));
    let tables = tables?;
    dropped?;
    drop(runtime);
    let section = render(options, &valgrind, &tables);
    println!("{section}");
    if let Some(path) = &options.out {
        let previous = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, report::splice_section(&previous, &section))?;
        eprintln!("coredb-bench: wrote the section into {}", path.display());
    }
    eprintln!(
        "coredb-bench: --callgrind done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_children(
    options: &CallgrindOptions,
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    dir: &Path,
) -> Result<Vec<Table>> {
    if options.only.contains(&4) {
        runtime.block_on(rows_inserts::create_schema(target))?;
    }
    let mut tables = Vec::new();
    for &scenario in &options.only {
        let mut samples = CostSamples::default();
        for rep in 0..options.reps {
            for (case, column, label) in units(scenario) {
                eprintln!(
                    "callgrind S{scenario} {label}: repetition {}/{}",
                    rep + 1,
                    options.reps
                );
                let counts = (
                    scaled(scenario, case, options.warmup),
                    scaled(scenario, case, options.ops),
                );
                for counter in [Counter::Allocations, Counter::Instructions] {
                    match run_child(target, dir, scenario, (case, column), counts, counter)? {
                        Counts::Allocations(counted) => {
                            eprintln!(
                                "  {:.3} allocations, {:.1} bytes per operation ({} operations)",
                                counted.allocations_per_op(),
                                counted.bytes_per_op(),
                                counted.ops
                            );
                            samples.push_counted(case, column, &counted);
                        }
                        Counts::Instructions { ops, instructions } => {
                            let per_op = instructions as f64 / ops.max(1) as f64;
                            eprintln!(
                                "  {per_op:.1} instructions per operation ({ops} operations)"
                            );
                            samples.push(case, column, Cost::Instructions, per_op);
                        }
                    }
                }
            }
        }
        let method = method(scenario, options);
        tables.push(match scenario {
            1 => pool_overhead::cost_table(&samples, &Cost::ALL, &method),
            2 => checkout_query::cost_table(&samples, &Cost::ALL, &method),
            3 => autocommit::cost_table(&samples, &Cost::ALL, &method),
            _ => rows_inserts::cost_table(&samples, &Cost::ALL, &method),
        });
    }
    if options.only.contains(&4) {
        runtime.block_on(rows_inserts::drop_schema(target))?;
    }
    Ok(tables)
}

fn method(scenario: u8, options: &CallgrindOptions) -> String {
    let counts = if scenario == 1 {
        format!(
            "{} checkouts (rounded up to a multiple of the tasks) after {} untimed ones",
            options.ops, options.warmup
        )
    } else if scenario == 4 {
        format!(
            "{} operations after {} untimed ones (operations of 100 rows: a tenth of that; of \
             10,000 rows: a thousandth, at least one)",
            options.ops, options.warmup
        )
    } else {
        format!(
            "{} queries (rounded up to a multiple of the tasks) after {} untimed ones",
            options.ops, options.warmup
        )
    };
    format!(
        "Each contender in child processes of its own on a current-thread tokio runtime, \
         {counts}: instructions from callgrind, allocations and bytes from the counting \
         allocator in a second, native run."
    )
}

fn render(options: &CallgrindOptions, valgrind: &str, tables: &[Table]) -> String {
    let only: Vec<String> = options.only.iter().map(u8::to_string).collect();
    let mut command = format!(
        "cargo run --release -p coredb-bench -- --callgrind --only {}",
        only.join(",")
    );
    if options.ops != CallgrindOptions::OPS {
        command.push_str(&format!(" --ops {}", options.ops));
    }
    if options.reps != 1 {
        command.push_str(&format!(" --reps {}", options.reps));
    }
    let intro = format!(
        "Costs per operation that do not depend on the machine's load: instructions executed \
         by the client (callgrind's `Ir`) and allocations and bytes allocated (the harness's \
         counting allocator). The goals in these units are the ones to meet; the timed tables \
         report time ratios beside them.\n\n\
         ```sh\n{command}\n```\n\n\
         - How: for every case and contender, `coredb-bench` runs itself as a child process \
         (`{CHILD_FLAG}`) on a current-thread tokio runtime against the same server, {} \
         untimed operations, then {} counted ones inside `{MEASURED_SYMBOL}`. One child runs \
         under `valgrind --tool=callgrind --collect-atstart=no \
         --toggle-collect={MEASURED_SYMBOL}` ({valgrind}), which counts only the instructions \
         executed inside that function; another runs natively with the counting allocator \
         on. Needs valgrind in PATH; not part of `--quick` or CI.\n\
         - What is counted: the client alone. The connection tasks (tokio-postgres's \
         `Connection`, coredb's I/O tasks) run on the measured thread, so their work is in \
         the figures; the server runs natively and is not counted. Instructions include the \
         system allocator's (glibc `malloc`), not the kernel's.\n\
         - Repeatability (`--reps 2` shows it as ±): timing enters only through when replies \
         arrive, i.e. how often a task finds its socket not yet readable and how tasks \
         sharing a few connections interleave. Instructions repeat within about 1%, except \
         sqlx's, which move by up to about 15%; allocations repeat within 0.1% for one task \
         on one connection (S4) and move by a few percent where many tasks share few \
         connections (S2, S3), as do the bytes of large reads (buffers grow with how the \
         reply arrives).",
        options.warmup, options.ops
    );
    report::render_section("Deterministic units", &intro, tables)
}
