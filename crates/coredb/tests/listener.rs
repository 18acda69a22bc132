//! LISTEN/NOTIFY: every notification while connected, under load; reconnection after
//! `pg_terminate_backend` and after a server restart, announced only once the channels are
//! listened to again; typed payloads; a connection outside the pool, shown in health.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, ListenerEvent, Notification};
use coredb_embedded::EmbeddedServer;
use coredb_testkit::TestDatabase;

/// Long enough for anything that normally takes milliseconds; only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

/// The next event, within [`PATIENCE`].
async fn next(listener: &mut coredb::Listener) -> ListenerEvent {
    tokio::time::timeout(PATIENCE, listener.recv())
        .await
        .expect("an event in time")
        .expect("the listener is running")
}

/// The next notification, skipping nothing: anything else fails the test.
async fn notification(listener: &mut coredb::Listener) -> Notification {
    match next(listener).await {
        ListenerEvent::Notification(n) => n,
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_gets_every_one_of_ten_thousand_notifications_under_load() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager().clone();
    let mut listener = m.listener().await.unwrap();
    listener.listen("orders").await.unwrap();

    // Other work on the same database meanwhile.
    let load = {
        let m = m.clone();
        tokio::spawn(async move {
            for i in 0..2_000i64 {
                let _: i64 = m.scalar("SELECT $1::int8 * 2", (i,)).await.unwrap();
            }
        })
    };
    let senders: Vec<_> = (0..4)
        .map(|task| {
            let m = m.clone();
            tokio::spawn(async move {
                for i in 0..2_500 {
                    m.notify("orders", &format!("{task}-{i}")).await.unwrap();
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    while seen.len() < 10_000 {
        let n = notification(&mut listener).await;
        assert_eq!(n.channel(), "orders");
        assert!(n.process_id() > 0);
        assert!(
            seen.insert(n.payload().to_owned()),
            "twice: {}",
            n.payload()
        );
    }
    for sender in senders {
        sender.await.unwrap();
    }
    load.await.unwrap();
    for task in 0..4 {
        for i in 0..2_500 {
            assert!(seen.contains(&format!("{task}-{i}")));
        }
    }
    // Nothing more than what was sent.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv())
            .await
            .is_err()
    );
    m.close().await;
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct OrderPlaced {
    id: i64,
    total: String,
}

#[tokio::test]
async fn listen_unlisten_typed_payloads_and_the_health_report() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut listener = m.listener().await.unwrap();
    listener.listen("Orders.Placed").await.unwrap();
    listener.listen("audit \"quoted\"").await.unwrap();
    assert_eq!(
        m.status().size,
        0,
        "the listener's connection is not the pool's"
    );
    let report = m.health_report().await;
    let listeners = report.listeners.unwrap();
    assert_eq!((listeners.open, listeners.connected), (1, 1));
    let json = serde_json::to_value(m.health_report().await).unwrap();
    assert_eq!(json["listeners"]["connected"], 1);

    m.notify("Orders.Placed", r#"{"id": 7, "total": "19.99"}"#)
        .await
        .unwrap();
    let n = notification(&mut listener).await;
    assert_eq!(n.channel(), "Orders.Placed");
    assert_eq!(
        n.json::<OrderPlaced>().unwrap(),
        OrderPlaced {
            id: 7,
            total: "19.99".into()
        }
    );
    m.notify("audit \"quoted\"", "not json").await.unwrap();
    let n = notification(&mut listener).await;
    assert_eq!(n.payload(), "not json");
    let err = n.json::<OrderPlaced>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(err.to_string().contains("audit"), "{err}");

    // Channel names are taken as given: a different case is another channel.
    m.notify("orders.placed", "{}").await.unwrap();
    listener.unlisten("audit \"quoted\"").await.unwrap();
    m.notify("audit \"quoted\"", "gone").await.unwrap();
    m.notify("Orders.Placed", r#"{"id": 8, "total": "1.00"}"#)
        .await
        .unwrap();
    let n = notification(&mut listener).await;
    assert_eq!(n.json::<OrderPlaced>().unwrap().id, 8, "nothing in between");

    let err = listener.listen("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    let long = "x".repeat(64);
    let err = listener.listen(&long).await.unwrap_err();
    assert!(err.to_string().contains("63 bytes"), "{err}");

    drop(listener);
    tokio::task::yield_now().await;
    let listeners = m.health_report().await.listeners.unwrap();
    assert_eq!((listeners.open, listeners.connected), (0, 0));
    m.close().await;
}

/// The backend pid of the listener's connection, found by the channel it listens to.
async fn listener_pid(m: &DatabaseManager, channel: &str) -> i32 {
    m.scalar(
        "SELECT pid FROM pg_stat_activity WHERE query = $1 AND datname = current_database()",
        (format!("LISTEN \"{channel}\""),),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_listener_comes_back_after_pg_terminate_backend_and_says_so_once_listening() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut listener = m.listener().await.unwrap();
    listener.listen("first").await.unwrap();
    listener.listen("second").await.unwrap();
    let pid = listener_pid(m, "second").await;
    let terminated: bool = m
        .scalar("SELECT pg_terminate_backend($1)", (pid,))
        .await
        .unwrap();
    assert!(terminated);

    assert_eq!(next(&mut listener).await, ListenerEvent::Reconnected);
    // Reconnected comes after both LISTENs: a notification sent now arrives.
    m.notify("first", "after").await.unwrap();
    m.notify("second", "after too").await.unwrap();
    assert_eq!(notification(&mut listener).await.payload(), "after");
    assert_eq!(notification(&mut listener).await.payload(), "after too");
    assert_ne!(listener_pid(m, "second").await, pid, "a new connection");
    let listeners = m.health_report().await.listeners.unwrap();
    assert_eq!((listeners.open, listeners.connected), (1, 1));
    m.close().await;
}

#[tokio::test]
async fn a_listener_comes_back_after_a_server_restart() {
    let server = Arc::new(
        tokio::task::spawn_blocking(|| EmbeddedServer::builder().start())
            .await
            .unwrap()
            .expect("embedded server starts"),
    );
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(server.port())
        .user(server.user())
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    let mut listener = m.listener().await.unwrap();
    listener.listen("jobs").await.unwrap();
    m.notify("jobs", "before").await.unwrap();
    assert_eq!(notification(&mut listener).await.payload(), "before");

    let restarting = Arc::clone(&server);
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap()
        .expect("server restarts");

    assert_eq!(next(&mut listener).await, ListenerEvent::Reconnected);
    m.notify("jobs", "after").await.unwrap();
    assert_eq!(notification(&mut listener).await.payload(), "after");
    drop(listener);
    m.close().await;
}
