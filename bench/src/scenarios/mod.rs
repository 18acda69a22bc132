//! The seven scenarios, each in its own module, each returning one or more tables of the
//! report.

pub mod autocommit;
pub mod checkout_query;
pub mod memory;
pub mod pool_overhead;
pub mod rows_inserts;
pub mod streaming;
pub mod telemetry;

use crate::options::Options;
use crate::pgbench::Pgbench;
use crate::report::Table;
use crate::server::Target;
use crate::Result;

/// Runs the chosen scenarios, in the order given, against `target`.
pub async fn run_all(options: &Options, target: &Target) -> Result<Vec<Table>> {
    let budget = &options.budget;
    // pgbench is the reference of scenarios 2 and 3 only.
    let wants_pgbench = options.only.iter().any(|s| matches!(s, 2 | 3));
    let pgbench = if wants_pgbench {
        Pgbench::find(target)?
    } else {
        None
    };
    match &pgbench {
        Some(pgbench) => {
            eprintln!(
                "pgbench: {} (-i into the scratch database)",
                pgbench.binary().display()
            );
            pgbench.init().await?;
        }
        None if wants_pgbench => eprintln!("pgbench: not found; its columns read n/a"),
        None => {}
    }
    let mut tables = Vec::new();
    for scenario in &options.only {
        tables.push(match scenario {
            1 => pool_overhead::run(budget).await?,
            2 => {
                tables.extend(checkout_query::run(budget, target, pgbench.as_ref()).await?);
                continue;
            }
            3 => {
                tables.extend(autocommit::run(budget, target, pgbench.as_ref()).await?);
                continue;
            }
            4 => {
                tables.extend(rows_inserts::run(budget, target).await?);
                continue;
            }
            5 => memory::run(budget, target).await?,
            6 => {
                tables.extend(telemetry::run(budget, target).await?);
                continue;
            }
            _ => {
                tables.extend(streaming::run(budget, target).await?);
                continue;
            }
        });
    }
    Ok(tables)
}
