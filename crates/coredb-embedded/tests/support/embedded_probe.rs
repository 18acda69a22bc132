//! Test helpers: a minimal synchronous PostgreSQL client (simple query protocol, trust auth),
//! process inspection, and re-running this test binary as a helper process.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One connection speaking just enough of the protocol for tests.
pub struct Conn(TcpStream);

impl Conn {
    pub fn connect(port: u16) -> io::Result<Self> {
        let stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut conn = Conn(stream);
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
        for s in ["user", "postgres", "database", "postgres", ""] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        conn.0.write_all(&msg)?;
        loop {
            let (tag, body) = conn.read_message()?;
            match tag {
                b'R' if body[..4] != [0, 0, 0, 0] => {
                    return Err(io::Error::other("password requested"))
                }
                b'E' => return Err(io::Error::other(error_text(&body))),
                b'Z' => return Ok(conn),
                _ => {}
            }
        }
    }

    /// Runs `sql` and returns the rows of its last result, NULL as None.
    pub fn query(&mut self, sql: &str) -> io::Result<Vec<Vec<Option<String>>>> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.0.write_all(&msg)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message()?;
            match tag {
                b'T' => rows.clear(),
                b'D' => rows.push(parse_row(&body)),
                b'E' => error = Some(error_text(&body)),
                b'Z' => return error.map_or(Ok(rows), |e| Err(io::Error::other(e))),
                _ => {}
            }
        }
    }

    /// The first column of the first row.
    pub fn scalar(&mut self, sql: &str) -> io::Result<String> {
        let rows = self.query(sql)?;
        rows.first()
            .and_then(|row| row.first().cloned().flatten())
            .ok_or_else(|| io::Error::other(format!("no value from {sql}")))
    }

    fn read_message(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        self.0.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.0.read_exact(&mut body)?;
        Ok((header[0], body))
    }
}

fn parse_row(body: &[u8]) -> Vec<Option<String>> {
    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    (0..count)
        .map(|_| {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                return None;
            }
            let value = String::from_utf8_lossy(&body[at..at + len as usize]).into_owned();
            at += len as usize;
            Some(value)
        })
        .collect()
}

fn error_text(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .filter(|field| field.first() == Some(&b'M'))
        .map(|field| String::from_utf8_lossy(&field[1..]).into_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Connects and returns the value of `sql`.
pub fn scalar(port: u16, sql: &str) -> io::Result<String> {
    Conn::connect(port)?.scalar(sql)
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Live (non-zombie) processes of the server in `data_dir`: working directory in it (every
/// postgres process chdirs there; it shows as "<dir> (deleted)" once removed) or command line naming it.
pub fn server_processes(data_dir: &Path) -> Vec<u32> {
    let dir = data_dir.to_str().unwrap();
    let real = std::fs::canonicalize(data_dir).ok();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !is_alive(pid) {
            continue;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let cwd = cwd.to_string_lossy();
        let in_dir = cwd.starts_with(dir)
            || real
                .as_ref()
                .is_some_and(|r| cwd.starts_with(&*r.to_string_lossy()));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if in_dir || String::from_utf8_lossy(&cmdline).contains(dir) {
            found.push(pid);
        }
    }
    found
}

/// Polls `done` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

pub const HELPER_ENV: &str = "COREDB_EMBEDDED_TEST_HELPER";

/// Re-runs this test binary's `test_name` with HELPER_ENV=`mode`; returns the child and the
/// words after the first "READY" line it prints.
pub fn run_helper(test_name: &str, mode: &str) -> (Child, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (ready, words) = std::sync::mpsc::channel();
    // Keep draining after READY, so the helper never writes into a closed pipe.
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            // libtest may print "test name ... " on the same line first.
            if let Some(rest) = line.split_once("READY ").map(|(_, rest)| rest) {
                let _ = ready.send(
                    rest.split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                );
            }
        }
    });
    match words.recv_timeout(Duration::from_secs(120)) {
        Ok(words) => (child, words),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("helper {mode} ended ({status}) without printing READY");
        }
    }
}

pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Shows the module's tracing output with `RUST_LOG=coredb=debug cargo test -- --nocapture`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
