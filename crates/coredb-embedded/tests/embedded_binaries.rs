//! An explicit COREDB_PG_BINDIR without the binaries is an error naming it, not a silent fallback.
//! Alone in its test binary because it changes the environment.

use coredb_embedded::{EmbeddedErrorKind, EmbeddedServer};

#[test]
fn explicit_bindir_without_binaries_is_an_error() {
    let empty = std::env::temp_dir().join(format!("coredb-empty-bindir-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    std::env::set_var("COREDB_PG_BINDIR", &empty);

    let err = EmbeddedServer::start().expect_err("no binaries there");
    assert_eq!(err.kind(), EmbeddedErrorKind::BinariesNotFound);
    let text = err.to_string();
    assert!(text.contains("COREDB_PG_BINDIR"), "{text}");
    assert!(text.contains(empty.to_str().unwrap()), "{text}");

    let err = EmbeddedServer::shared().expect_err("shared() reports it too");
    assert_eq!(err.kind(), EmbeddedErrorKind::BinariesNotFound);
    std::fs::remove_dir_all(&empty).unwrap();
}
