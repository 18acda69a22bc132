//! Finding the PostgreSQL server binaries and their version.

use std::env;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{EmbeddedError, EmbeddedErrorKind};

/// Environment variable naming the directory that holds `initdb` and `postgres`.
pub(crate) const BINDIR_ENV: &str = "COREDB_PG_BINDIR";

pub(crate) const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, postgres) were not found on PATH, via pg_config, or in /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`) or point coredb at a server by setting DATABASE_URL or POSTGRES_HOST.";

// postmaster.pid reports "ready" only from PostgreSQL 10 on, and readiness is detected through it.
const MIN_MAJOR: u32 = 10;

/// The server binaries of one PostgreSQL installation.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) bindir: PathBuf,
    pub(crate) initdb: PathBuf,
    pub(crate) postgres: PathBuf,
    /// Full version, e.g. "15.20".
    pub(crate) version: String,
    pub(crate) major: u32,
}

impl Binaries {
    /// Finds the binaries: `COREDB_PG_BINDIR`, else `PATH`, else `pg_config --bindir`,
    /// else the newest `/usr/lib/postgresql/*/bin`.
    pub(crate) fn find() -> Result<Self, EmbeddedError> {
        let bindir = Search::from_env().bindir()?;
        Self::in_dir(bindir)
    }

    fn in_dir(bindir: PathBuf) -> Result<Self, EmbeddedError> {
        let postgres = bindir.join("postgres");
        let version = version_of(&postgres)?;
        let major = major_of(&version).unwrap_or(0);
        if major < MIN_MAJOR {
            return Err(EmbeddedError::new(
                EmbeddedErrorKind::BinariesNotFound,
                format!(
                    "PostgreSQL {version} in {} is too old: the embedded server needs PostgreSQL {MIN_MAJOR} or newer. Install a newer version, or set {BINDIR_ENV} to its bin directory.",
                    bindir.display()
                ),
            ));
        }
        tracing::debug!(bindir = %bindir.display(), %version, "found PostgreSQL server binaries");
        Ok(Self {
            initdb: bindir.join("initdb"),
            postgres,
            bindir,
            version,
            major,
        })
    }
}

/// Where to look; a value rather than ambient state so the lookup order can be unit tested.
struct Search {
    explicit: Option<OsString>,
    path: Option<OsString>,
    pg_config: Option<OsString>,
    lib_root: PathBuf,
}

impl Search {
    fn from_env() -> Self {
        Self {
            explicit: env::var_os(BINDIR_ENV).filter(|v| !v.is_empty()),
            path: env::var_os("PATH"),
            pg_config: Some("pg_config".into()),
            lib_root: PathBuf::from("/usr/lib/postgresql"),
        }
    }

    fn bindir(&self) -> Result<PathBuf, EmbeddedError> {
        // An explicit choice that is wrong is an error, never a silent fallback to another installation.
        if let Some(dir) = &self.explicit {
            let dir = PathBuf::from(dir);
            let missing: Vec<&str> = ["initdb", "postgres"]
                .into_iter()
                .filter(|name| !is_executable(&dir.join(name)))
                .collect();
            if missing.is_empty() {
                return Ok(dir);
            }
            return Err(EmbeddedError::new(
                EmbeddedErrorKind::BinariesNotFound,
                format!(
                    "{BINDIR_ENV} is set to {}, but that directory has no executable {}. Point {BINDIR_ENV} at the directory holding the PostgreSQL server binaries (e.g. /usr/lib/postgresql/15/bin), or unset it to search PATH, pg_config and /usr/lib/postgresql/*/bin.",
                    dir.display(),
                    missing.join(" or ")
                ),
            ));
        }
        self.on_path()
            .or_else(|| self.via_pg_config())
            .or_else(|| newest_under(&self.lib_root))
            .ok_or_else(|| EmbeddedError::new(EmbeddedErrorKind::BinariesNotFound, NOT_FOUND))
    }

    fn on_path(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        env::split_paths(path)
            .filter(|dir| dir.is_absolute())
            .find(|dir| has_server_binaries(dir))
            .map(|dir| {
                // Prefer the real bin directory when PATH holds symlinks (e.g. /usr/local/bin -> /usr/lib/postgresql/15/bin).
                std::fs::canonicalize(dir.join("postgres"))
                    .ok()
                    .and_then(|real| real.parent().map(Path::to_path_buf))
                    .filter(|real| has_server_binaries(real))
                    .unwrap_or(dir)
            })
    }

    fn via_pg_config(&self) -> Option<PathBuf> {
        let output = Command::new(self.pg_config.as_ref()?)
            .arg("--bindir")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        has_server_binaries(&dir).then_some(dir)
    }
}

/// The newest `<root>/<version>/bin` holding the binaries, comparing versions numerically (10 > 9.6).
fn newest_under(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((key, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// `postgres --version` works as root too, so no user switch is needed here.
fn version_of(postgres: &Path) -> Result<String, EmbeddedError> {
    let output = Command::new(postgres)
        .arg("--version")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            EmbeddedError::caused_by(
                EmbeddedErrorKind::BinariesNotFound,
                format_args!("could not run `{} --version`", postgres.display()),
                e,
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| {
        EmbeddedError::new(
            EmbeddedErrorKind::BinariesNotFound,
            format!(
                "`{} --version` printed {:?}, not a PostgreSQL version; set {BINDIR_ENV} to the bin directory of a PostgreSQL server installation.",
                postgres.display(),
                text.trim()
            ),
        )
    })
}

/// "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" -> "15.20".
fn parse_version(text: &str) -> Option<String> {
    let version = text
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then(|| version.to_string())
}

/// "15.20" -> 15, "17devel" -> 17, "9.6.24" -> 9.
fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = env::temp_dir().join(format!(
                "coredb-binaries-test-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Creates `<rel>/initdb` and `<rel>/postgres` as executable files.
        fn fake_bindir(&self, rel: &str) -> PathBuf {
            let dir = self.0.join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            for name in ["initdb", "postgres"] {
                let file = dir.join(name);
                std::fs::write(&file, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn search(scratch: &Scratch) -> Search {
        let empty = scratch.0.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        Search {
            explicit: None,
            path: Some(empty.clone().into_os_string()),
            pg_config: None,
            lib_root: empty,
        }
    }

    #[test]
    fn nothing_found_gives_the_documented_message() {
        let scratch = Scratch::new("none");
        let err = search(&scratch).bindir().unwrap_err();
        assert_eq!(err.kind(), EmbeddedErrorKind::BinariesNotFound);
        assert_eq!(err.to_string(), NOT_FOUND);
    }

    #[test]
    fn explicit_bindir_without_binaries_is_an_error_naming_it() {
        let scratch = Scratch::new("explicit");
        let on_path = scratch.fake_bindir("on-path");
        let empty = scratch.0.join("explicit-empty");
        std::fs::create_dir_all(&empty).unwrap();
        let mut search = search(&scratch);
        search.path = Some(on_path.into_os_string());
        search.explicit = Some(empty.clone().into_os_string());

        let err = search.bindir().unwrap_err();
        assert_eq!(err.kind(), EmbeddedErrorKind::BinariesNotFound);
        let text = err.to_string();
        assert!(text.contains(BINDIR_ENV), "{text}");
        assert!(text.contains(&empty.display().to_string()), "{text}");
        assert!(text.contains("initdb or postgres"), "{text}");
    }

    #[test]
    fn explicit_bindir_with_binaries_is_used() {
        let scratch = Scratch::new("explicit-ok");
        let dir = scratch.fake_bindir("bin");
        let mut search = search(&scratch);
        search.explicit = Some(dir.clone().into_os_string());
        assert_eq!(search.bindir().unwrap(), dir);
    }

    #[test]
    fn path_is_searched_in_order() {
        let scratch = Scratch::new("path");
        let first = scratch.fake_bindir("first");
        let second = scratch.fake_bindir("second");
        let mut search = search(&scratch);
        search.path =
            Some(env::join_paths([scratch.0.join("empty"), first.clone(), second]).unwrap());
        assert_eq!(search.bindir().unwrap(), first);
    }

    #[test]
    fn newest_library_version_wins_numerically() {
        let scratch = Scratch::new("lib");
        scratch.fake_bindir("lib/9.6/bin");
        let ten = scratch.fake_bindir("lib/10/bin");
        std::fs::create_dir_all(scratch.0.join("lib/99/bin")).unwrap(); // no binaries: skipped
        let mut search = search(&scratch);
        search.lib_root = scratch.0.join("lib");
        assert_eq!(search.bindir().unwrap(), ten);
    }

    #[test]
    fn versions_are_parsed() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n").as_deref(),
            Some("15.20")
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 17devel").as_deref(),
            Some("17devel")
        );
        assert_eq!(parse_version("something else"), None);
        assert_eq!(major_of("15.20"), Some(15));
        assert_eq!(major_of("17devel"), Some(17));
        assert_eq!(major_of("9.6.24"), Some(9));
    }
}
