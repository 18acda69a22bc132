//! Command line and the sizes of a run (full or quick).

use std::path::PathBuf;
use std::time::Duration;

use crate::callgrind::{self, CallgrindOptions};

/// Usage text.
pub const USAGE: &str = "\
usage: coredb-bench [--quick] [--out PATH] [--reps N] [--only LIST]
       coredb-bench --callgrind [--only LIST] [--ops N] [--reps N] [--out PATH]

  --quick     smoke test (CI): one short repetition of every scenario, under a minute;
              writes nothing unless --out is given
  --out PATH  where to write the Markdown report (full run default: docs/benchmarks.md
              in the workspace); --callgrind replaces its own section in that file
  --reps N    repetitions per measurement (full default 5, quick default 1, callgrind 1)
  --only LIST scenarios to run, e.g. 2,3 (default: 1,2,3,4,5,6,7; callgrind: 1,2,3,4)
  --callgrind instructions (valgrind --tool=callgrind, which must be in PATH), allocations
              and bytes per operation of every case of scenarios 1 to 4 and every
              contender, each in a child process on a current-thread runtime; writes
              nothing unless --out is given; not part of --quick
  --ops N     operations counted per child in --callgrind (default 2000, after 200)

The server is the one configured by DATABASE_URL or POSTGRES_HOST (environment or .env) when
set, else a throwaway embedded server. pgbench is looked up in PATH and in
/usr/lib/postgresql/*/bin; without it, the pgbench columns read n/a.";

/// The scenarios, by number.
pub const ALL_SCENARIOS: [u8; 7] = [1, 2, 3, 4, 5, 6, 7];

/// What to do.
pub enum Command {
    /// Print the usage.
    Help,
    /// Run the benchmarks.
    Run(Options),
    /// Internal: measure resident memory of one contender's idle pool in this process.
    MemoryProbe(crate::scenarios::memory::Probe),
    /// Count instructions and allocations per operation (`--callgrind`).
    Callgrind(CallgrindOptions),
    /// Internal: one `--callgrind` child, a fixed number of operations in this process.
    FixedRun(crate::callgrind::Child),
}

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Quick mode (a smoke test, numbers are not meaningful).
    pub quick: bool,
    /// Where to write the report, if anywhere.
    pub out: Option<PathBuf>,
    /// Sizes and durations.
    pub budget: Budget,
    /// Scenarios to run (1 to 7).
    pub only: Vec<u8>,
}

/// Sizes and durations of every measurement.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Repetitions of each measurement; the median is reported.
    pub reps: usize,
    /// Length of one timed measurement.
    pub measure: Duration,
    /// Untimed run before each measurement (opens connections, prepares statements).
    pub warmup: Duration,
    /// Checkouts per measurement in the pool-overhead scenario.
    pub pool_checkouts: u64,
    /// `pgbench -T` seconds.
    pub pgbench_seconds: u32,
    /// Idle connections per contender in the memory scenario.
    pub idle_connections: usize,
    /// Queries counted per contender for allocations per query (S5, S6).
    pub alloc_queries: u64,
    /// Operations counted per contender and case for the cost tables of S2 to S4.
    pub counted_ops: u64,
    /// Rows read per measurement in the streaming scenario.
    pub stream_rows: u64,
}

impl Budget {
    /// The full run: 5 repetitions of 1 s measurements.
    pub fn full() -> Self {
        Budget {
            reps: 5,
            measure: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
            pool_checkouts: 1 << 20,
            pgbench_seconds: 1,
            idle_connections: 100,
            alloc_queries: 10_000,
            counted_ops: 2_000,
            stream_rows: 200_000,
        }
    }

    /// The quick run: one short repetition of everything.
    pub fn quick() -> Self {
        Budget {
            reps: 1,
            measure: Duration::from_millis(150),
            warmup: Duration::from_millis(50),
            pool_checkouts: 1 << 16,
            pgbench_seconds: 1,
            idle_connections: 20,
            alloc_queries: 1_000,
            counted_ops: 200,
            stream_rows: 20_000,
        }
    }
}

/// The default report path: `docs/benchmarks.md` at the workspace root.
fn default_out() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/benchmarks.md"
    ))
}

impl Options {
    /// Parses the arguments (without the program name).
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
        let mut args = args.peekable();
        if args.peek().map(String::as_str) == Some(crate::scenarios::memory::PROBE_FLAG) {
            args.next();
            return crate::scenarios::memory::Probe::from_args(args).map(Command::MemoryProbe);
        }
        if args.peek().map(String::as_str) == Some(callgrind::CHILD_FLAG) {
            args.next();
            return callgrind::Child::from_args(args).map(Command::FixedRun);
        }
        let mut quick = false;
        let mut out = None;
        let mut reps = None;
        let mut only = None;
        let mut callgrind = false;
        let mut ops = None;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--callgrind" => callgrind = true,
                "--ops" => {
                    let n = args.next().ok_or("--ops needs a number")?;
                    let n: u64 = n
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--ops {n}: expected a positive number"))?;
                    ops = Some(n);
                }
                "--out" => {
                    let path = args.next().ok_or("--out needs a path")?;
                    out = Some(PathBuf::from(path));
                }
                "--reps" => {
                    let n = args.next().ok_or("--reps needs a number")?;
                    let n: usize = n
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--reps {n}: expected a positive number"))?;
                    reps = Some(n);
                }
                "--only" => {
                    let list = args.next().ok_or("--only needs a list such as 2,3")?;
                    let scenarios: Vec<u8> = list
                        .split(',')
                        .map(|n| {
                            n.trim()
                                .trim_start_matches(['S', 's'])
                                .parse::<u8>()
                                .ok()
                                .filter(|n| ALL_SCENARIOS.contains(n))
                                .ok_or_else(|| format!("--only {list}: scenarios are 1 to 7"))
                        })
                        .collect::<Result<_, _>>()?;
                    only = Some(scenarios);
                }
                "-h" | "--help" => return Ok(Command::Help),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if callgrind {
            if quick {
                return Err("--callgrind and --quick do not go together".into());
            }
            let only = only.unwrap_or_else(|| callgrind::SCENARIOS.to_vec());
            if let Some(s) = only.iter().find(|s| !callgrind::SCENARIOS.contains(s)) {
                return Err(format!(
                    "--callgrind: scenario {s} has no fixed-count runs (1 to 4 do)"
                ));
            }
            return Ok(Command::Callgrind(CallgrindOptions {
                only,
                ops: ops.unwrap_or(CallgrindOptions::OPS),
                warmup: CallgrindOptions::WARMUP,
                reps: reps.unwrap_or(1),
                out,
            }));
        }
        if ops.is_some() {
            return Err("--ops goes with --callgrind".into());
        }
        let only = only.unwrap_or_else(|| ALL_SCENARIOS.to_vec());
        let mut budget = if quick {
            Budget::quick()
        } else {
            Budget::full()
        };
        if let Some(reps) = reps {
            budget.reps = reps;
        }
        if out.is_none() && !quick {
            out = Some(default_out());
        }
        Ok(Command::Run(Options {
            quick,
            out,
            budget,
            only,
        }))
    }

    /// The command line that reproduces this run, for the report.
    pub fn command_line(&self) -> String {
        let mut args = Vec::new();
        if self.quick {
            args.push("--quick".to_owned());
        }
        let default_reps = if self.quick {
            Budget::quick().reps
        } else {
            Budget::full().reps
        };
        if self.budget.reps != default_reps {
            args.push(format!("--reps {}", self.budget.reps));
        }
        if self.only != ALL_SCENARIOS {
            let list: Vec<String> = self.only.iter().map(u8::to_string).collect();
            args.push(format!("--only {}", list.join(",")));
        }
        if self.quick {
            if let Some(out) = &self.out {
                args.push(format!("--out {}", out.display()));
            }
        }
        let mut command = String::from("cargo run --release -p coredb-bench");
        if !args.is_empty() {
            command.push_str(" -- ");
            command.push_str(&args.join(" "));
        }
        command
    }
}
