//! `coredb-bench`: coredb measured side by side with sqlx, deadpool-postgres, bb8 and plain
//! tokio-postgres (and pgbench, libpq in C, as the reference), against one PostgreSQL server in
//! one run.
//!
//! ```text
//! cargo run --release -p coredb-bench -- [--quick] [--out docs/benchmarks.md] [--reps N]
//! ```
//!
//! The server is the configured one when `DATABASE_URL` or `POSTGRES_HOST` is set (environment
//! or `.env`), else a throwaway embedded server. The harness creates its own scratch database,
//! runs every scenario with every contender interleaved per repetition, prints a Markdown table
//! of medians and of ratios coredb/peer with each goal marked met or missed, and writes it
//! (with a description of the machine) to `--out` when given. The full run writes
//! `docs/benchmarks.md` by default; `--quick` (a smoke test for CI) writes nothing unless `--out`
//! is given. Timings are never asserted. Scenarios 2 to 4 also report allocations and bytes
//! per operation of every case and contender, counted by this binary's global allocator
//! (every thread of the process, connection tasks included) over a fixed number of operations
//! after the timed measurement.
//!
//! ```text
//! cargo run --release -p coredb-bench -- --callgrind [--only 1,2,3,4] [--ops 2000] [--reps N] [--out PATH]
//! ```
//!
//! `--callgrind` measures in units that don't wobble with the machine's load: for every case
//! of scenarios 1 to 4 and every contender, it runs this binary as a child process on a
//! current-thread runtime against the same server, once under
//! `valgrind --tool=callgrind --toggle-collect=coredb_bench_measured_ops` (instructions per
//! operation of the client, its connection tasks included, the server not) and once natively
//! with the counting allocator on (allocations and bytes per operation), each over a fixed
//! number of operations after a warm-up. valgrind must be in PATH. It prints a "Deterministic
//! units" section and, with `--out`, replaces that section in the file (a timed run writing the
//! same file keeps it). Neither `--quick` nor CI runs it. See `callgrind.rs`.

mod alloc_counter;
mod callgrind;
mod contenders;
mod costs;
mod machine;
mod measure;
mod observed;
mod options;
mod pgbench;
mod report;
mod scenarios;
mod server;

use std::process::ExitCode;
use std::time::Instant;

use options::{Command, Options};

#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

/// The error type of the harness: anything, with its message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result of the harness.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let command = match Options::from_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("coredb-bench: {message}\n\n{}", options::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", options::USAGE);
            Ok(())
        }
        Command::MemoryProbe(probe) => scenarios::memory::run_probe(&probe),
        Command::Callgrind(options) => callgrind::run(&options),
        Command::FixedRun(child) => child.run(),
        Command::Run(options) => run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coredb-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let load_before = machine::load_average();
    // The embedded server starts synchronously, before the runtime exists.
    let server = server::Server::start()?;
    eprintln!("coredb-bench: server: {}", server.describe());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let target = server.prepare().await?;
        // On a worker thread, like a request handler: `block_on`'s own thread is not one.
        let scenarios = tokio::spawn({
            let options = options.clone();
            let target = target.clone();
            async move { scenarios::run_all(&options, &target).await }
        });
        let result = scenarios.await.map_err(BoxError::from).and_then(|r| r);
        let dropped = server.cleanup(&target).await;
        let report = result?;
        dropped?;
        Ok::<_, BoxError>((report, target))
    });
    drop(runtime);
    let (tables, target) = outcome?;
    let machine = machine::Machine::describe(&target.server_version, &load_before);
    let document = report::render_document(options, &machine, &server.describe(), &tables);
    println!("{document}");
    if let Some(path) = &options.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // A section written by `--callgrind` into the same file stays.
        let previous = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, report::keep_section(&document, &previous))?;
        eprintln!("coredb-bench: wrote {}", path.display());
    }
    eprintln!(
        "coredb-bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
