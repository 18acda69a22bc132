//! Configuration from variables, URLs and the builder: defaults, validation, password masking.

use std::time::Duration;

use coredb::{DatabaseConfig, ErrorKind, SslMode};

fn vars(pairs: &[(&str, &str)]) -> coredb::Result<DatabaseConfig> {
    DatabaseConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn defaults_follow_the_design_table() {
    let c = vars(&[]).unwrap();
    assert_eq!(c.hosts(), ["localhost"]);
    assert_eq!(c.ports(), [5432]);
    assert_eq!(c.user(), "postgres");
    assert_eq!(c.dbname(), "postgres", "defaults to the user's name");
    assert!(c.password().is_none());
    assert_eq!(c.pool_size(), 5);
    assert_eq!(c.max_overflow(), 10);
    assert_eq!(c.pool_timeout(), Duration::from_secs(30));
    assert_eq!(c.pool_recycle(), Some(Duration::from_secs(1800)));
    assert!(c.pool_pre_ping());
    assert_eq!(c.connect_timeout(), Duration::from_secs(10));
    assert_eq!(c.statement_timeout(), None);
    assert_eq!(c.ssl_mode(), SslMode::Prefer);
    assert_eq!(c.application_name(), "coredb");
    assert!(!c.echo());
    assert_eq!(c.statement_cache_size(), 100);
}

#[test]
fn postgres_variables_are_read() {
    let c = vars(&[
        ("POSTGRES_HOST", "db.internal"),
        ("POSTGRES_PORT", "6543"),
        ("POSTGRES_USER", "app"),
        ("POSTGRES_PASSWORD", "s3cret"),
        ("POSTGRES_DB", "prepaid"),
        ("POSTGRES_POOL_SIZE", "8"),
        ("POSTGRES_MAX_OVERFLOW", "0"),
        ("POSTGRES_POOL_TIMEOUT", "2.5"),
        ("POSTGRES_POOL_RECYCLE", "-1"),
        ("POSTGRES_POOL_PRE_PING", "off"),
        ("POSTGRES_CONNECT_TIMEOUT", "3"),
        ("POSTGRES_STATEMENT_TIMEOUT", "15"),
        ("POSTGRES_SSLMODE", "disable"),
        ("POSTGRES_APPLICATION_NAME", "billing"),
        ("DEBUG", "true"),
    ])
    .unwrap();
    assert_eq!(
        c.database_url(),
        "postgres://app:***@db.internal:6543/prepaid"
    );
    assert_eq!(c.password().unwrap().expose(), "s3cret");
    assert_eq!((c.pool_size(), c.max_overflow()), (8, 0));
    assert_eq!(c.pool_timeout(), Duration::from_millis(2500));
    assert_eq!(c.pool_recycle(), None);
    assert!(!c.pool_pre_ping());
    assert_eq!(c.connect_timeout(), Duration::from_secs(3));
    assert_eq!(c.statement_timeout(), Some(Duration::from_secs(15)));
    assert_eq!(c.ssl_mode(), SslMode::Disable);
    assert_eq!(c.application_name(), "billing");
    assert!(c.echo(), "DEBUG=true turns on statement echo");
}

#[test]
fn database_url_is_the_base_and_postgres_variables_override_it() {
    let c = vars(&[
        (
            "DATABASE_URL",
            "postgresql://u:pw@h1:5433/base?application_name=x",
        ),
        ("POSTGRES_DB", "other"),
    ])
    .unwrap();
    assert_eq!(c.database_url(), "postgres://u:***@h1:5433/other");
    assert_eq!(c.application_name(), "x");
}

#[test]
fn comma_separated_hosts_give_failover_in_order() {
    let c = vars(&[
        ("POSTGRES_HOST", "a,b,c"),
        ("POSTGRES_PORT", "5432,5433,5434"),
    ])
    .unwrap();
    assert_eq!(c.hosts(), ["a", "b", "c"]);
    assert_eq!(
        c.database_url(),
        "postgres://postgres@a:5432,b:5433,c:5434/postgres"
    );
    let url = DatabaseConfig::from_url(
        "postgres://app@p1:5432,p2:5433/db?target_session_attrs=read-write",
    )
    .unwrap();
    assert_eq!(url.hosts(), ["p1", "p2"]);
    assert_eq!(url.ports(), [5432, 5433]);
}

#[test]
fn every_bad_variable_is_reported_at_once_with_what_is_allowed() {
    let err = vars(&[
        ("POSTGRES_PORT", "abc"),
        ("POSTGRES_POOL_SIZE", "0"),
        ("POSTGRES_MAX_OVERFLOW", "-1"),
        ("POSTGRES_POOL_TIMEOUT", "-5"),
        ("POSTGRES_CONNECT_TIMEOUT", "soon"),
        ("POSTGRES_POOL_RECYCLE", "0"),
        ("POSTGRES_SSLMODE", "sometimes"),
        ("POSTGRES_POOL_PRE_PING", "maybe"),
        ("POSTGRES_PASSWORD", "hunter2"),
    ])
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let msg = err.to_string();
    for expected in [
        "8 problems",
        "POSTGRES_PORT=\"abc\": not a port number; allowed 1-65535",
        "POSTGRES_POOL_SIZE=\"0\": must be a whole number of at least 1",
        "POSTGRES_MAX_OVERFLOW=\"-1\": must be a whole number of at least 0",
        "POSTGRES_POOL_TIMEOUT=\"-5\": must be a number of seconds greater than 0",
        "POSTGRES_CONNECT_TIMEOUT=\"soon\"",
        "POSTGRES_POOL_RECYCLE=\"0\": must be a number of seconds greater than 0, or -1",
        "POSTGRES_SSLMODE=\"sometimes\": unknown sslmode; allowed: disable, allow, prefer, require, verify-ca, verify-full",
        "POSTGRES_POOL_PRE_PING=\"maybe\": must be true or false",
    ] {
        assert!(msg.contains(expected), "missing {expected:?} in:\n{msg}");
    }
    assert!(!msg.contains("hunter2"));
}

#[test]
fn port_out_of_range_and_empty_host_are_rejected() {
    let msg = vars(&[("POSTGRES_PORT", "70000"), ("POSTGRES_HOST", "a,,b")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("POSTGRES_PORT=\"70000\": port out of range; allowed 1-65535"),
        "{msg}"
    );
    assert!(
        msg.contains("POSTGRES_HOST=\"a,,b\": must name a host"),
        "{msg}"
    );
}

#[test]
fn malformed_url_is_rejected_without_showing_the_password() {
    for url in [
        "mysql://u:topsecret@h/db",
        "postgres://u:topsecret@h:notaport/db",
        "postgres://u:topsecret@h/db?sslmode=sometimes",
    ] {
        let err = DatabaseConfig::from_url(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(msg.contains("DATABASE_URL="), "{msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(msg.contains("u:***@"), "{msg}");
    }
}

#[test]
fn password_never_appears_in_debug_or_display() {
    let c = DatabaseConfig::builder()
        .host("h")
        .user("app")
        .password("correct-horse")
        .build()
        .unwrap();
    for text in [
        format!("{c:?}"),
        format!("{c}"),
        format!("{:?}", c.password()),
    ] {
        assert!(!text.contains("correct-horse"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
    let engine = c.create_engine().unwrap();
    assert!(!format!("{engine:?}").contains("correct-horse"));
}

#[test]
fn builder_validates_with_builder_names() {
    let err = DatabaseConfig::builder()
        .pool_size(0)
        .pool_timeout(Duration::ZERO)
        .host("")
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("pool_size=\"0\""), "{msg}");
    assert!(
        msg.contains("pool_timeout=\"0\": must be greater than 0"),
        "{msg}"
    );
    assert!(msg.contains("host=\"\""), "{msg}");
}

#[test]
fn unreadable_root_certificate_is_a_config_error_naming_the_file() {
    let c = vars(&[
        ("POSTGRES_SSLMODE", "verify-full"),
        ("POSTGRES_SSLROOTCERT", "/nonexistent/root.pem"),
    ])
    .unwrap();
    let err = c.create_engine().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string()
            .contains("POSTGRES_SSLROOTCERT names \"/nonexistent/root.pem\""),
        "{err}"
    );
}

#[test]
fn a_client_certificate_needs_both_its_files_and_each_must_hold_what_it_names() {
    let err = vars(&[("POSTGRES_SSLCERT", "/etc/app/client.pem")]).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        text.contains("POSTGRES_SSLCERT=\"/etc/app/client.pem\""),
        "{text}"
    );
    assert!(text.contains("POSTGRES_SSLKEY"), "{text}");

    let err = vars(&[(
        "DATABASE_URL",
        "postgres://app@db/app?sslmode=verify-full&sslkey=%2Fetc%2Fapp%2Fclient.key",
    )])
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/etc/app/client.key"), "{text}");
    assert!(text.contains("sslcert and sslkey"), "{text}");

    let err = DatabaseConfig::builder()
        .ssl_cert("/etc/app/client.pem")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ssl_cert=") && text.contains("ssl_key"),
        "{text}"
    );

    // Files that cannot serve: named with their path, never with what they hold.
    let dir = std::env::temp_dir().join(format!("coredb-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_key = dir.join("not-a-key.pem");
    std::fs::write(&not_a_key, "just text, no PEM\n").unwrap();
    let broken_key = dir.join("broken.key");
    std::fs::write(
        &broken_key,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let with_key = |cert: &str, key: &std::path::Path| {
        vars(&[
            ("POSTGRES_SSLMODE", "require"),
            ("POSTGRES_SSLCERT", cert),
            ("POSTGRES_SSLKEY", &key.display().to_string()),
        ])
        .unwrap()
        .create_engine()
        .unwrap_err()
    };
    let err = with_key("/nonexistent/client.pem", &not_a_key);
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains(
            "POSTGRES_SSLCERT names \"/nonexistent/client.pem\", which could not be read"
        ),
        "{err}"
    );
    let cert = not_a_key.display().to_string();
    let err = with_key(&cert, &not_a_key);
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );
    // A real certificate is not needed to reach the key: the key is read second.
    let root = dir.join("root.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(dir.join("root.key"))
        .arg("-out")
        .arg(&root)
        .args(["-days", "1", "-subj", "/CN=coredb config test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cert = root.display().to_string();
    let err = with_key(&cert, &not_a_key);
    let text = err.to_string();
    assert!(text.contains("POSTGRES_SSLKEY names"), "{text}");
    assert!(text.contains("holds no PEM private key"), "{text}");
    let err = with_key(&cert, &broken_key);
    let text = err.to_string();
    assert!(text.contains("is not a valid PEM file"), "{text}");
    assert!(!text.contains("c2VjcmV0"), "key material in {text}");
    // A key that is not the certificate's.
    let other_key = dir.join("other.key");
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-out"])
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = with_key(&cert, &other_key);
    let text = err.to_string();
    assert!(
        text.contains("cannot be used with the certificate") && text.contains("POSTGRES_SSLKEY"),
        "{text}"
    );

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sslnegotiation_takes_postgres_or_direct_and_direct_needs_tls_required() {
    for (raw, expected) in [
        ("postgres", coredb::SslNegotiation::Postgres),
        ("direct", coredb::SslNegotiation::Direct),
    ] {
        let c = vars(&[
            ("POSTGRES_SSLMODE", "verify-full"),
            ("POSTGRES_SSLNEGOTIATION", raw),
        ])
        .unwrap();
        assert_eq!(c.ssl_negotiation(), expected);
    }
    assert_eq!(
        vars(&[]).unwrap().ssl_negotiation(),
        coredb::SslNegotiation::Postgres
    );
    for err in [
        vars(&[("POSTGRES_SSLNEGOTIATION", "fast")]).unwrap_err(),
        vars(&[("DATABASE_URL", "postgres://app@db/app?sslnegotiation=fast")]).unwrap_err(),
    ] {
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(text.contains("\"fast\""), "{text}");
        assert!(text.contains("allowed: postgres, direct"), "{text}");
    }
    for mode in ["disable", "allow", "prefer"] {
        let err = vars(&[(
            "DATABASE_URL",
            &format!("postgres://app@db/app?sslmode={mode}&sslnegotiation=direct"),
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("POSTGRES_SSLNEGOTIATION=\"direct\""),
            "{text}"
        );
        assert!(text.contains("require, verify-ca or verify-full"), "{text}");
    }
    let err = DatabaseConfig::builder()
        .ssl_negotiation(coredb::SslNegotiation::Direct)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("ssl_negotiation=\"direct\""),
        "{err}"
    );
    assert!(err.to_string().contains("ssl_mode"), "{err}");
}

#[test]
fn tls_settings_in_the_url_are_taken_as_libpq_takes_them() {
    let cases = [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Prefer),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];
    for (mode, expected) in cases {
        let url = format!(
            "postgres://app:s3cret@db.internal:6432/app?sslmode={mode}&sslrootcert=%2Fetc%2Fssl%2Fca.pem&application_name=svc"
        );
        let c = vars(&[("DATABASE_URL", &url)]).unwrap();
        assert_eq!(c.ssl_mode(), expected, "{mode}");
        assert_eq!(
            c.ssl_root_cert(),
            Some(std::path::Path::new("/etc/ssl/ca.pem"))
        );
        assert_eq!(c.application_name(), "svc", "other parameters still apply");
        assert_eq!(
            (c.hosts(), c.ports()),
            (&["db.internal".to_owned()][..], &[6432][..])
        );
    }

    let err = vars(&[(
        "DATABASE_URL",
        "postgres://app:s3cret@db/app?sslmode=sometimes",
    )])
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(text.contains("sslmode=\"sometimes\""), "{text}");
    assert!(
        text.contains("allow, prefer, require, verify-ca, verify-full"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");

    let c = vars(&[(
        "DATABASE_URL",
        "postgresql://app:s3cret@db/app?sslmode=verify-full&sslcert=%2Fetc%2Fapp%2Fclient.pem&sslkey=%2Fetc%2Fapp%2Fclient.key&sslnegotiation=direct",
    )])
    .unwrap();
    assert_eq!(
        c.ssl_cert(),
        Some(std::path::Path::new("/etc/app/client.pem"))
    );
    assert_eq!(
        c.ssl_key(),
        Some(std::path::Path::new("/etc/app/client.key"))
    );
    assert_eq!(c.ssl_negotiation(), coredb::SslNegotiation::Direct);

    for refused in ["sslpassword=x", "sslcrl=crl.pem", "sslcrldir=crls"] {
        let err = vars(&[(
            "DATABASE_URL",
            &format!("postgres://app:s3cret@db/app?sslmode=verify-full&{refused}"),
        )])
        .unwrap_err();
        let text = err.to_string();
        let key = refused.split('=').next().unwrap_or_default();
        assert!(text.contains(&format!("{key}=")), "{text}");
        assert!(text.contains("not supported"), "{text}");
        assert!(
            text.contains("sslrootcert, sslcert, sslkey") && text.contains("sslnegotiation"),
            "what is taken: {text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[test]
fn pgbouncer_mode_is_read_checked_and_turns_the_statement_cache_off() {
    let c = vars(&[("POSTGRES_PGBOUNCER", "transaction")]).unwrap();
    assert_eq!(c.pgbouncer(), coredb::PgBouncerMode::Transaction);
    assert_eq!(c.statement_cache_size(), 0, "no named statements behind it");
    for off in ["off", "session"] {
        let c = vars(&[("POSTGRES_PGBOUNCER", off)]).unwrap();
        assert_eq!(c.pgbouncer(), coredb::PgBouncerMode::Off);
        assert_eq!(c.statement_cache_size(), 100);
    }
    let err = vars(&[("POSTGRES_PGBOUNCER", "statement")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("POSTGRES_PGBOUNCER=\"statement\""), "{text}");
    assert!(
        text.contains("allowed: off, session, transaction"),
        "{text}"
    );
}
