//! `COMMIT` with a witness: the transaction's id and the server it ran on, read in the same
//! round trip, so that a commit whose reply was lost can be resolved by asking the server
//! instead of being guessed (and perhaps applied twice).
//!
//! Why this is sound, and where it stops: `txid_status(id)` answers from the commit log of the
//! server that assigned the id. The answer counts only from the same server history, so the
//! witness records the server's address, its current timeline (from the name of the WAL
//! file being written; a promotion starts a new timeline) and when its postmaster started: a
//! crash loses the WAL not yet written, and with it the ids it assigned, which recovery then
//! hands out again, so after a restart `txid_status(id)` may describe another transaction. A
//! status read on another address, timeline or postmaster (a failover or a restart happened)
//! proves nothing, and the outcome stays unknown. A server
//! rebuilt from scratch at the same address and on the same timeline would fool the check;
//! comparing the system identifier would catch it, but `pg_control_system()` is not readable by
//! every role, and the witness must never fail inside the caller's transaction.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use crate::conn::{Event, PgConn};
use crate::error::{Error, ErrorKind, Result};

/// The columns that identify the server history a statement runs on: the timeline (from the
/// name of the WAL file being written; `NULL` on a standby), the address and the postmaster's
/// start (a restart after a crash may give out transaction ids again). Guarded so that they
/// cannot fail.
macro_rules! history_columns {
    () => {
        "CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
         coalesce(host(inet_server_addr()), 'socket') || ':' || coalesce(inet_server_port()::text, ''), \
         pg_postmaster_start_time()::text"
    };
}

/// Read in the same round trip as `COMMIT`. Nothing in it can fail (a failure would abort the
/// transaction the `COMMIT` then ends).
const WITNESS: &str = concat!(
    "SELECT txid_current_if_assigned()::text, ",
    history_columns!()
);

/// Asked of the primary after a write committed: a WAL position at or past its commit record
/// (read after `COMMIT` returned). A replica whose `pg_last_wal_replay_lsn()` reached it has
/// replayed the commit.
pub(crate) const WRITTEN_SQL: &str = "SELECT pg_current_wal_insert_lsn()::text";

/// A WAL position as PostgreSQL writes it (`16/B374D848`), as one number; `None` for `NULL`
/// or anything else.
pub(crate) fn parse_lsn(text: Option<&str>) -> Option<u64> {
    let (high, low) = text?.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some(high << 32 | low)
}

/// The furthest WAL position that a read-your-writes scope has written (0: none yet).
#[derive(Debug, Default)]
pub(crate) struct WriteMark(AtomicU64);

impl WriteMark {
    /// Records a write that reached `lsn`.
    pub(crate) fn raise(&self, lsn: u64) {
        self.0.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The position reads must see; 0 when nothing was written.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What identifies one server history: where it answers, on which timeline, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct History {
    timeline: Option<String>,
    address: String,
    started: String,
}

impl History {
    /// The history in columns 1 to 3 of a row that selected `history_columns!()` after one
    /// column of its own.
    fn from_row(row: &SimpleQueryRow) -> Self {
        History {
            timeline: row.get(1).map(str::to_owned),
            address: row.get(2).unwrap_or_default().to_owned(),
            started: row.get(3).unwrap_or_default().to_owned(),
        }
    }
}

/// What the server said just before `COMMIT`.
#[derive(Debug, Clone)]
pub(crate) struct Witness {
    /// The transaction's id; `None` when it wrote nothing (so either outcome is the same).
    pub(crate) xid: Option<i64>,
    history: History,
}

/// What came back of the witness query sent with `COMMIT`.
#[derive(Debug, Clone)]
pub(crate) enum WitnessReply {
    /// The transaction's id and server, read before `COMMIT` ran.
    Seen(Witness),
    /// The server refused the witness query (an error, or it ended the session with it): the
    /// `COMMIT` behind it cannot have committed.
    Refused,
    /// No reply: the connection went first.
    Missing,
}

/// What another connection says of a witnessed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It committed.
    Committed,
    /// It did not commit (it was rolled back, or its server crashed before the commit).
    Aborted,
    /// Its server has not finished with it yet.
    InProgress,
    /// The answer cannot be trusted or given (another server history, an id too old).
    Unknown,
}

/// Sends the witness query and `COMMIT` together (one round trip) and returns the commit's
/// result with the witness, when its reply arrived. With `position`, asks in the same round
/// trip how far the WAL reached after the commit (see [`WRITTEN_SQL`]) and returns it.
pub(crate) async fn commit(
    conn: &mut PgConn,
    position: bool,
) -> (Result<()>, WitnessReply, Option<u64>) {
    conn.on(Event::EndSent);
    let client = &conn.client;
    // Polled together, the requests leave in one write, the witness first.
    let written = async {
        if !position {
            return None;
        }
        let messages = client.simple_query(WRITTEN_SQL).await.ok()?;
        messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => parse_lsn(row.get(0)),
            _ => None,
        })
    };
    let (witness, committed, written) = tokio::join!(
        client.simple_query(WITNESS),
        client.batch_execute("COMMIT"),
        written
    );
    let (committed, witness) = read_commit(conn, witness, committed);
    (committed, witness, written)
}

/// The commit's result and its witness, from their replies.
fn read_commit(
    conn: &mut PgConn,
    witness: std::result::Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>,
    committed: std::result::Result<(), tokio_postgres::Error>,
) -> (Result<()>, WitnessReply) {
    let committed = committed.map_err(|e| Error::from_driver(e, Some("COMMIT")));
    conn.on(match &committed {
        Err(e) if e.kind() == ErrorKind::ConnectionLost => Event::Lost,
        _ => Event::Ended,
    });
    match witness {
        Ok(messages) => match read_witness(&messages) {
            Some(witness) => (committed, WitnessReply::Seen(witness)),
            None => (committed, WitnessReply::Missing),
        },
        // The server refused the witness: it aborted the transaction (or ended the session)
        // before COMMIT, which then rolled back: PostgreSQL answers a COMMIT of an aborted
        // transaction with ROLLBACK, and no error.
        Err(e) if e.as_db_error().is_some() => {
            let cause = Error::from_driver(e, Some(WITNESS));
            match committed {
                Ok(()) => (
                    Err(Error::new(
                        ErrorKind::Query,
                        format!("the transaction was rolled back instead of committed: {cause}"),
                    )),
                    WitnessReply::Refused,
                ),
                Err(lost) => (Err(lost), WitnessReply::Refused),
            }
        }
        Err(_) => (committed, WitnessReply::Missing),
    }
}

fn read_witness(messages: &[SimpleQueryMessage]) -> Option<Witness> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(Witness {
            xid: row.get(0).and_then(|x| x.parse().ok()),
            history: History::from_row(row),
        }),
        _ => None,
    })
}

/// Asks, on another connection, what became of the witnessed transaction.
///
/// # Errors
/// When the question cannot be asked (the connection fails).
pub(crate) async fn outcome(other: &mut PgConn, witness: &Witness) -> Result<Outcome> {
    let Some(xid) = witness.xid else {
        return Ok(Outcome::Committed);
    };
    // The id is a number this crate parsed: safe to write into the text.
    let sql = format!(concat!("SELECT txid_status({}), ", history_columns!()), xid);
    other.on(Event::Sent {
        leaves_state: false,
    });
    let messages = other.client.simple_query(&sql).await;
    other.on(match &messages {
        Err(e) if e.is_closed() => Event::Lost,
        _ => Event::Replied,
    });
    let messages = messages.map_err(|e| Error::from_driver(e, Some(&sql)))?;
    let Some(SimpleQueryMessage::Row(row)) = messages
        .iter()
        .find(|m| matches!(m, SimpleQueryMessage::Row(_)))
    else {
        return Ok(Outcome::Unknown);
    };
    let here = History::from_row(row);
    if here != witness.history || here.timeline.is_none() {
        return Ok(Outcome::Unknown);
    }
    Ok(match row.get(0) {
        Some("committed") => Outcome::Committed,
        Some("aborted") => Outcome::Aborted,
        Some("in progress") => Outcome::InProgress,
        _ => Outcome::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_parse_as_postgresql_writes_them() {
        assert_eq!(parse_lsn(Some("0/0")), Some(0));
        assert_eq!(parse_lsn(Some("16/B374D848")), Some(0x16_B374_D848));
        assert_eq!(parse_lsn(Some("FFFFFFFF/FFFFFFFF")), Some(u64::MAX));
        for bad in ["", "16", "x/1", "1/", "100000000/0"] {
            assert_eq!(parse_lsn(Some(bad)), None, "{bad}");
        }
        assert_eq!(parse_lsn(None), None);
    }
}
