//! pgbench (libpq, C) as the reference: run as a subprocess against the same server.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server::Target;
use crate::Result;

/// A pgbench binary, set up to reach the scratch database, with its scripts.
pub struct Pgbench {
    binary: PathBuf,
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
    scripts: PathBuf,
}

/// Looks for pgbench in `PATH`, then in `/usr/lib/postgresql/*/bin` (newest first).
fn find_binary() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbench"))
            .find(|candidate| candidate.is_file())
    });
    in_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin/pgbench")))
            .filter(|candidate| candidate.is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

impl Pgbench {
    /// Finds pgbench and writes its scripts; `None` when it is not installed.
    pub fn find(target: &Target) -> Result<Option<Self>> {
        let Some(binary) = find_binary() else {
            return Ok(None);
        };
        let scripts = std::env::temp_dir().join(format!("coredb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scripts)?;
        std::fs::write(scripts.join("select1.sql"), "SELECT 1;\n")?;
        let mut pipeline = String::from("\\startpipeline\n");
        for _ in 0..PIPELINE_DEPTH {
            pipeline.push_str("SELECT 1;\n");
        }
        pipeline.push_str("\\endpipeline\n");
        std::fs::write(scripts.join("pipeline.sql"), pipeline)?;
        Ok(Some(Pgbench {
            binary,
            host: target.host().to_owned(),
            port: target.port(),
            user: target.config.user().to_owned(),
            password: target.password().map(str::to_owned),
            dbname: target.config.dbname().to_owned(),
            scripts,
        }))
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        command
    }

    /// `pgbench -i` (scale 1) into the scratch database.
    pub async fn init(&self) -> Result<()> {
        let mut command = self.command();
        command.args(["-i", "-q", "-s", "1"]).arg(&self.dbname);
        run(command).await.map(drop)
    }

    /// Prepared `SELECT 1` from `clients` connections for `seconds`: queries per second.
    pub async fn select1(&self, clients: usize, seconds: u32) -> Result<f64> {
        self.script("select1.sql", clients, seconds).await
    }

    /// `clients` connections each pipelining [`PIPELINE_DEPTH`] prepared `SELECT 1`:
    /// queries per second.
    pub async fn pipelined(&self, clients: usize, seconds: u32) -> Result<f64> {
        let tps = self.script("pipeline.sql", clients, seconds).await?;
        Ok(tps * PIPELINE_DEPTH as f64)
    }

    async fn script(&self, script: &str, clients: usize, seconds: u32) -> Result<f64> {
        let threads = clients.min(std::thread::available_parallelism().map_or(1, usize::from));
        let mut command = self.command();
        command
            .args(["-n", "-M", "prepared"])
            .arg("-f")
            .arg(self.scripts.join(script))
            .arg("-c")
            .arg(clients.to_string())
            .arg("-j")
            .arg(threads.to_string())
            .arg("-T")
            .arg(seconds.to_string())
            .arg(&self.dbname);
        let output = run(command).await?;
        parse_tps(&output)
            .ok_or_else(|| format!("no \"tps = \" line in pgbench's output:\n{output}").into())
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Drop for Pgbench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scripts);
    }
}

/// Statements per pipeline in the pipelined script (the reference: 4 clients × 20).
pub const PIPELINE_DEPTH: usize = 20;

async fn run(mut command: Command) -> Result<String> {
    // Program and arguments only: the environment may hold PGPASSWORD.
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    crate::measure::stdout_of(&output, &shown)
}

/// Reads `tps = 1234.5 (without initial connection time)`.
fn parse_tps(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        line.trim()
            .strip_prefix("tps = ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_tps;

    #[test]
    fn reads_tps_line() {
        let out = "latency average = 0.1 ms\ninitial connection time = 2.0 ms\ntps = 10234.567 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(10234.567));
        assert_eq!(parse_tps("nothing"), None);
    }
}
