//! Timing: concurrent workers running one workload, sequential loops, repetitions and medians.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Barrier::new(workers + 1));
    let quota = match until {
        Until::Total(total) => Some(total.div_ceil(workers as u64)),
        Until::Elapsed(_) => None,
    };
    let tasks: Vec<_> = (0..workers)
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
    gate.wait().await;
    let start = Instant::now();
    if let Until::Elapsed(limit) = until {
        tokio::time::sleep(limit).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut total = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(done) => total += done,
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    match first_error {
        Some(err) => Err(err),
        None => Ok(total as f64 / elapsed),
    }
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
