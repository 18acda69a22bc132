//! A description of the machine and software a run measured.

use std::fmt::Write as _;
use std::process::Command;

/// The workspace lock file, read at build time for the contenders' versions.
const LOCK_FILE: &str = include_str!("../../Cargo.lock");

/// The crates whose versions the report lists.
const LIBRARIES: [&str; 7] = [
    "coredb",
    "tokio-postgres",
    "deadpool",
    "deadpool-postgres",
    "bb8",
    "bb8-postgres",
    "sqlx",
];

/// What the numbers were measured on.
pub struct Machine {
    cpu: String,
    cores: usize,
    memory: String,
    os: String,
    kernel: String,
    date: String,
    postgres: String,
    rustc: String,
    libraries: Vec<(String, String)>,
    source: String,
    load: String,
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg, e.g. "1.20 0.80 0.50".
pub fn load_average() -> String {
    let text = read("/proc/loadavg");
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(" ")
    } else {
        "unknown".to_owned()
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `name = value` lines of a `/proc` or `/etc` file.
fn field<'a>(text: &'a str, key: &str, separator: char) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(separator)?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Versions of `names` in a Cargo.lock.
fn locked_versions(lock: &str, names: &[&str]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for package in lock.split("[[package]]") {
        let name = field(package, "name", '=');
        let version = field(package, "version", '=');
        if let (Some(name), Some(version)) = (name, version) {
            if names.contains(&name) {
                found.push((name.to_owned(), version.to_owned()));
            }
        }
    }
    found.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
    found
}

/// The commit of the workspace this binary was built from, and whether coredb's sources had
/// uncommitted changes (read with `git` at run time; "unknown" outside a checkout).
fn source_revision() -> String {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        let mut all = vec!["-C", workspace];
        all.extend_from_slice(args);
        output_of("git", &all)
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--", "crates"])
                .is_some_and(|changes| !changes.is_empty());
            if dirty {
                format!("commit {commit}, with uncommitted changes under crates/")
            } else {
                format!("commit {commit}")
            }
        }
        None => "unknown (not a git checkout)".to_owned(),
    }
}

impl Machine {
    /// Reads /proc, /etc/os-release, `uname -r` and `rustc --version`; `load_before` is the
    /// [`load_average`] when the run started.
    pub fn describe(postgres_version: &str, load_before: &str) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let memory = field(&meminfo, "MemTotal", ':')
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or("unknown".to_owned(), |kib| {
                format!("{:.1} GiB", kib / 1024.0 / 1024.0)
            });
        Machine {
            cpu: field(&cpuinfo, "model name", ':')
                .unwrap_or("unknown")
                .to_owned(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory,
            os: field(&read("/etc/os-release"), "PRETTY_NAME", '=')
                .unwrap_or("unknown")
                .to_owned(),
            kernel: output_of("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            postgres: postgres_version.to_owned(),
            rustc: output_of("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            libraries: locked_versions(LOCK_FILE, &LIBRARIES),
            source: source_revision(),
            load: format!("{load_before} at the start, {} at the end", load_average()),
        }
    }

    /// Markdown bullet list.
    pub fn render(&self, out: &mut String, server: &str) {
        let libraries = self
            .libraries
            .iter()
            .map(|(name, version)| format!("{name} {version}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- CPU: {} ({} cores available)", self.cpu, self.cores);
        let _ = writeln!(
            out,
            "- Load average (1, 5, 15 min; the machine is shared): {}",
            self.load
        );
        let _ = writeln!(out, "- Memory: {}", self.memory);
        let _ = writeln!(out, "- OS: {}, kernel {}", self.os, self.kernel);
        let _ = writeln!(
            out,
            "- PostgreSQL {}: {server}, over loopback TCP",
            self.postgres
        );
        let _ = writeln!(out, "- Rust: {} (release profile)", self.rustc);
        let _ = writeln!(out, "- Libraries: {libraries}");
        let _ = writeln!(out, "- coredb source: {}", self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lock_versions() {
        let lock = "[[package]]\nname = \"bb8\"\nversion = \"0.9.1\"\n\n[[package]]\nname = \"other\"\nversion = \"1.0.0\"\n";
        assert_eq!(
            locked_versions(lock, &["bb8"]),
            vec![("bb8".to_owned(), "0.9.1".to_owned())]
        );
    }
}
