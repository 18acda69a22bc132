//! Timing: concurrent workers running one workload, sequential loops, repetitions and medians;
//! and the allocations of a fixed number of units of the same workload.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alloc_counter;

/// What a process printed on stdout, once it succeeded; otherwise an error naming it (`what`)
/// with its exit status and what it printed on stderr.
pub fn stdout_of(output: &std::process::Output, what: &str) -> Result<String> {
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The numbers a child process of the harness printed on stdout, once it succeeded; `what`
/// names the child in the error otherwise.
pub fn child_numbers(output: &std::process::Output, what: &str) -> Result<Vec<u64>> {
    Ok(stdout_of(output, what)?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect())
}
use crate::{BoxError, Result};

/// One unit of work (one checkout, one query, ...) that many workers repeat at once.
pub trait Workload: Send + Sync + 'static {
    /// Does the unit of work once.
    fn once(&self) -> impl Future<Output = Result<()>> + Send;
}

/// When a concurrent measurement ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this long (workers finish the unit they are in).
    Elapsed(Duration),
    /// After this many units in total, split evenly between the workers.
    Total(u64),
}

/// Runs `work` from `workers` tasks until `until`; returns units per second.
pub async fn throughput<W: Workload>(work: &Arc<W>, workers: usize, until: Until) -> Result<f64> {
    let (done, seconds) = Workers::spawn(work, workers, until).run().await?;
    Ok(done as f64 / seconds)
}

/// Runs `total` units of `work` from `workers` tasks (rounded up to a multiple of `workers`)
/// and counts the allocations of the whole process meanwhile, the tasks' spawning excluded.
pub async fn count_allocations<W: Workload>(
    work: &Arc<W>,
    workers: usize,
    total: u64,
) -> Result<Counted> {
    let workers = Workers::spawn(work, workers, Until::Total(total));
    tokio::task::yield_now().await;
    let counting = alloc_counter::start();
    let result = workers.run().await;
    let (allocations, bytes) = counting.stop();
    Ok(Counted {
        ops: result?.0,
        allocations,
        bytes,
    })
}

/// Worker tasks, spawned and waiting at a gate until [`Workers::run`] opens it, so that what
/// is measured starts with the work, not with the spawning.
pub struct Workers {
    stop: Arc<AtomicBool>,
    gate: Arc<tokio::sync::Barrier>,
    tasks: Vec<tokio::task::JoinHandle<Result<u64>>>,
    until: Until,
}

impl Workers {
    /// Spawns `workers` tasks that will repeat `work` until `until` (must run in a runtime).
    pub fn spawn<W: Workload>(work: &Arc<W>, workers: usize, until: Until) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Barrier::new(workers + 1));
        let quota = match until {
            Until::Total(total) => Some(total.div_ceil(workers as u64)),
            Until::Elapsed(_) => None,
        };
        let tasks = (0..workers)
            .map(|_| {
                let work = Arc::clone(work);
                let stop = Arc::clone(&stop);
                let gate = Arc::clone(&gate);
                tokio::spawn(async move {
                    gate.wait().await;
                    let mut done = 0u64;
                    loop {
                        let finished = match quota {
                            Some(quota) => done >= quota,
                            None => stop.load(Ordering::Relaxed),
                        };
                        if finished {
                            break;
                        }
                        if let Err(err) = work.once().await {
                            stop.store(true, Ordering::Relaxed);
                            return Err(err);
                        }
                        done += 1;
                    }
                    Ok::<u64, BoxError>(done)
                })
            })
            .collect();
        Workers {
            stop,
            gate,
            tasks,
            until,
        }
    }

    /// Opens the gate and waits for every worker; returns the units done and the seconds
    /// they took, or the first error.
    pub async fn run(self) -> Result<(u64, f64)> {
        self.gate.wait().await;
        let start = Instant::now();
        if let Until::Elapsed(limit) = self.until {
            tokio::time::sleep(limit).await;
            self.stop.store(true, Ordering::Relaxed);
        }
        let mut total = 0;
        let mut first_error = None;
        for task in self.tasks {
            match task.await? {
                Ok(done) => total += done,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        match first_error {
            Some(err) => Err(err),
            None => Ok((total, seconds)),
        }
    }
}

/// Allocations and bytes allocated over a fixed number of operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counted {
    /// Operations done while counting.
    pub ops: u64,
    /// Allocations (a `realloc` counts as one).
    pub allocations: u64,
    /// Bytes allocated.
    pub bytes: u64,
}

impl Counted {
    /// Counts the allocations of `run`, which does `ops` operations (every thread of the
    /// process counts).
    pub async fn sequential<T>(ops: u64, run: impl Future<Output = Result<T>>) -> Result<Self> {
        let counting = alloc_counter::start();
        let result = run.await;
        let (allocations, bytes) = counting.stop();
        result?;
        Ok(Counted {
            ops,
            allocations,
            bytes,
        })
    }

    /// Allocations per operation.
    pub fn allocations_per_op(&self) -> f64 {
        self.allocations as f64 / self.ops.max(1) as f64
    }

    /// Bytes allocated per operation.
    pub fn bytes_per_op(&self) -> f64 {
        self.bytes as f64 / self.ops.max(1) as f64
    }
}

/// A timed measurement of a workload and a counted run of the same workload.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Units per second.
    pub rate: f64,
    /// Allocations of a fixed number of units, after the timed run.
    pub counted: Counted,
}

/// Counts iterations of a sequential loop until a time limit (at least one iteration).
///
/// ```ignore
/// let mut clock = Stopwatch::new(limit);
/// while clock.next() { work().await?; }
/// let per_second = clock.rate();
/// ```
pub struct Stopwatch {
    start: Instant,
    limit: Duration,
    count: u64,
    end: Option<Instant>,
}

impl Stopwatch {
    /// Starts the clock.
    pub fn new(limit: Duration) -> Self {
        Stopwatch {
            start: Instant::now(),
            limit,
            count: 0,
            end: None,
        }
    }

    /// True when another iteration should run.
    pub fn next(&mut self) -> bool {
        if self.count > 0 {
            let now = Instant::now();
            if now - self.start >= self.limit {
                self.end = Some(now);
                return false;
            }
        }
        self.count += 1;
        true
    }

    /// Iterations per second.
    pub fn rate(&self) -> f64 {
        let end = self.end.unwrap_or_else(Instant::now);
        self.count as f64 / (end - self.start).as_secs_f64()
    }
}

/// The values of one measurement across repetitions.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// Adds one repetition's value.
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// The median (mean of the middle two for an even count); `None` when empty.
    pub fn median(&self) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        Some(if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        })
    }

    /// Half the range (max - min) relative to the median, e.g. 0.03 for ±3%.
    pub fn spread(&self) -> Option<f64> {
        let median = self.median()?;
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median > 0.0 && self.0.len() > 1).then(|| (max - min) / 2.0 / median)
    }
}

/// `items` rotated by `rep`, so that no contender always runs first (interleaving).
pub fn rotated<T: Clone>(items: &[T], rep: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let shift = rep % items.len();
    items[shift..]
        .iter()
        .chain(&items[..shift])
        .cloned()
        .collect()
}
