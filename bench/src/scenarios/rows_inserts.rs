//! Scenario 4: rows and inserts on a `users` table: fetch 1, 100 and 10,000 rows into structs;
//! insert 100 rows in one statement; insert 10,000 rows by COPY and row by row. coredb beside raw
//! tokio-postgres and sqlx, each on one connection held for the whole measurement. Beside the
//! rates, the costs per operation: allocations and bytes (counted in the timed run) and
//! instructions (`--callgrind`), the units of the goal "a statement in a session or on a
//! checked-out connection costs no more than on raw tokio-postgres".

use std::pin::pin;

use coredb::model::CopyIn;
use coredb::{Connection, DatabaseManager, Executor, Session};
use sqlx::{Connection as _, Row as _};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use crate::callgrind::FixedRun;
use crate::costs::{self, Cost, CostSamples};
use crate::measure::{rotated, Counted, Samples, Stopwatch};
use crate::options::Budget;
use crate::report::{Goal, Row, Table};
use crate::server::Target;
use crate::Result;

/// Rows in `users`, and rows of the large inserts.
const ROWS: usize = 10_000;
/// Rows of the one-statement insert.
const BATCH: usize = 100;

const SCHEMA: &str = "
    CREATE TABLE users (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        email text NOT NULL,
        age int4 NOT NULL,
        active bool NOT NULL
    );
    INSERT INTO users (name, email, age, active)
        SELECT 'user ' || g, 'user' || g || '@example.com', 18 + g % 60, g % 3 <> 0
        FROM generate_series(1, 10000) AS g;
    CREATE TABLE users_new (LIKE users INCLUDING ALL);
    ANALYZE users;";

const SELECT_USERS: &str = "SELECT id, name, email, age, active FROM users ORDER BY id LIMIT $1";
const INSERT_ONE: &str = "INSERT INTO users_new (name, email, age, active) VALUES ($1, $2, $3, $4)";
const COPY_BINARY: &str = "COPY users_new (name, email, age, active) FROM STDIN BINARY";
const COPY_TEXT: &str = "COPY users_new (name, email, age, active) FROM STDIN";
const COPY_TYPES: [Type; 4] = [Type::TEXT, Type::TEXT, Type::INT4, Type::BOOL];

/// A row of `users`, as an application would map it: coredb's derive (columns by name).
#[derive(Debug, coredb::FromRow)]
#[allow(dead_code)] // Read only through black_box.
struct User {
    id: i64,
    name: String,
    email: String,
    age: i32,
    active: bool,
}

impl User {
    /// Raw tokio-postgres: columns by index.
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(User {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            email: row.try_get(2)?,
            age: row.try_get(3)?,
            active: row.try_get(4)?,
        })
    }
}

/// What sqlx's `#[derive(FromRow)]` writes (its derive is left out with its macros): columns
/// by name.
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for User {
    fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        Ok(User {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            age: row.try_get("age")?,
            active: row.try_get("active")?,
        })
    }
}

/// A row to insert: a coredb model of `users_new`, so coredb's COPY can take it as is.
#[coredb::model(table = "users_new")]
struct NewUser {
    #[column(primary_key)]
    id: i64,
    name: String,
    email: String,
    age: i32,
    active: bool,
}

fn new_users(count: usize) -> Vec<NewUser> {
    (0..count)
        .map(|i| {
            NewUser::new(
                format!("new user {i}"),
                format!("new{i}@example.com"),
                18 + (i % 60) as i32,
                i % 3 != 0,
            )
        })
        .collect()
}

/// `INSERT ... VALUES ($1, $2, $3, $4), ($5, ...), ...` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO users_new (name, email, age, active) VALUES ");
    for r in 0..rows {
        let p = r * 4;
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4));
    }
    sql
}

fn params_of(users: &[NewUser]) -> Vec<&(dyn ToSql + Sync)> {
    users
        .iter()
        .flat_map(|u| [&u.name as &(dyn ToSql + Sync), &u.email, &u.age, &u.active])
        .collect()
}

/// The cases, one row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Fetch(i64),
    InsertBatch,
    Copy,
    RowByRow,
}

const CASES: [Case; 6] = [
    Case::Fetch(1),
    Case::Fetch(100),
    Case::Fetch(ROWS as i64),
    Case::InsertBatch,
    Case::Copy,
    Case::RowByRow,
];

impl Case {
    fn label(self) -> String {
        match self {
            Case::Fetch(n) => format!("fetch {n} row(s) into structs"),
            Case::InsertBatch => format!("insert {BATCH} rows, one statement"),
            Case::Copy => format!("insert {ROWS} rows, COPY"),
            Case::RowByRow => format!("insert {ROWS} rows, row by row in a transaction"),
        }
    }

    fn inserts(self) -> bool {
        !matches!(self, Case::Fetch(_))
    }

    /// Rows one operation reads or writes, in tens and thousands: counted runs of `ops`
    /// operations do `ops / weight` of them (at least one), so that every case costs about
    /// the same. Row by row counts single INSERTs, weight 1.
    fn weight(self) -> u64 {
        match self {
            Case::Fetch(1) => 1,
            Case::Fetch(n) if n <= BATCH as i64 => 10,
            Case::InsertBatch => 10,
            Case::Fetch(_) | Case::Copy => 1000,
            Case::RowByRow => 1,
        }
    }

    /// What one counted operation is.
    fn per(self) -> &'static str {
        match self {
            Case::Fetch(_) => "fetch",
            Case::InsertBatch => "statement",
            Case::Copy => "COPY",
            Case::RowByRow => "INSERT",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Library {
    Coredb,
    TokioPostgres,
    Sqlx,
}

const LIBRARIES: [Library; 3] = [Library::Coredb, Library::TokioPostgres, Library::Sqlx];

impl Library {
    fn name(self) -> &'static str {
        match self {
            Library::Coredb => "coredb",
            Library::TokioPostgres => "tokio-postgres",
            Library::Sqlx => "sqlx",
        }
    }
}

/// Creates the `users` table with its rows and the empty `users_new` (dropped first if there).
pub async fn create_schema(target: &Target) -> Result<()> {
    let db = target.coredb(1)?;
    let result = async {
        let mut conn = db.get_connection().await?;
        conn.execute("DROP TABLE IF EXISTS users, users_new", ())
            .await?;
        conn.execute_script(SCHEMA).await?;
        Ok(())
    }
    .await;
    db.close().await;
    result
}

/// Drops the tables of [`create_schema`].
pub async fn drop_schema(target: &Target) -> Result<()> {
    let db = target.coredb(1)?;
    let result = db.execute("DROP TABLE users, users_new", ()).await;
    db.close().await;
    result?;
    Ok(())
}

/// Inserts `rows` one statement each in coredb's `session`.
async fn insert_each_coredb<'a>(
    session: &mut Session,
    rows: impl Iterator<Item = &'a NewUser>,
) -> Result<()> {
    for u in rows {
        session
            .execute(INSERT_ONE, (&u.name, &u.email, u.age, u.active))
            .await?;
    }
    Ok(())
}

/// Inserts `rows` one statement each in a tokio-postgres transaction.
async fn insert_each_pg<'a>(
    transaction: &tokio_postgres::Transaction<'_>,
    insert_one: &Statement,
    rows: impl Iterator<Item = &'a NewUser>,
) -> Result<()> {
    for u in rows {
        transaction
            .execute(insert_one, &[&u.name, &u.email, &u.age, &u.active])
            .await?;
    }
    Ok(())
}

/// Inserts `rows` one statement each in a sqlx transaction.
async fn insert_each_sqlx<'a>(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: impl Iterator<Item = &'a NewUser>,
) -> Result<()> {
    for u in rows {
        sqlx::query(INSERT_ONE)
            .bind(&u.name)
            .bind(&u.email)
            .bind(u.age)
            .bind(u.active)
            .execute(&mut **transaction)
            .await?;
    }
    Ok(())
}

/// Every contender's connection, open for the whole scenario, and the data to insert.
struct Bench {
    db: DatabaseManager,
    coredb: Connection,
    client: Client,
    select_users: Statement,
    insert_one: Statement,
    insert_batch: Statement,
    sqlx: sqlx::PgConnection,
    rows: Vec<NewUser>,
    batch_sql: String,
}

impl Bench {
    /// Connects every contender to the tables of [`create_schema`].
    async fn connect(target: &Target) -> Result<Self> {
        // Two connections: one held for statements, one for the row-by-row session.
        let db = target.coredb(2)?;
        let coredb = db.get_connection().await?;
        let (client, connection) = target.pg_config().connect(NoTls).await?;
        tokio::spawn(connection);
        let batch_sql = multi_row_insert(BATCH);
        Ok(Bench {
            select_users: client.prepare(SELECT_USERS).await?,
            insert_one: client.prepare(INSERT_ONE).await?,
            insert_batch: client.prepare(&batch_sql).await?,
            sqlx: sqlx::PgConnection::connect_with(&target.sqlx_options()).await?,
            client,
            db,
            coredb,
            rows: new_users(ROWS),
            batch_sql,
        })
    }

    /// One operation of `case` by `library`.
    async fn once(&mut self, case: Case, library: Library) -> Result<()> {
        match (case, library) {
            (Case::Fetch(n), Library::Coredb) => {
                let users: Vec<User> = self.coredb.fetch_all(SELECT_USERS, (n,)).await?;
                std::hint::black_box(users);
            }
            (Case::Fetch(n), Library::TokioPostgres) => {
                let rows = self.client.query(&self.select_users, &[&n]).await?;
                let users = rows
                    .iter()
                    .map(User::from_pg)
                    .collect::<Result<Vec<_>, _>>()?;
                std::hint::black_box(users);
            }
            (Case::Fetch(n), Library::Sqlx) => {
                let users: Vec<User> = sqlx::query_as(SELECT_USERS)
                    .bind(n)
                    .fetch_all(&mut self.sqlx)
                    .await?;
                std::hint::black_box(users);
            }
            // ---- MODEL API SWITCH POINT ---------------------------------------------------
            // COPY uses coredb's model API (`CopyIn::copy_in`), which does the same work as the
            // peers' binary COPY. The two INSERT cases stay on the Executor API with the same SQL
            // as the peers: the model API's `insert_many` / `insert` add `RETURNING` and write
            // the keys back into the structs, which is more work than the peers do. To measure
            // them instead, replace the InsertBatch / RowByRow arms below with
            // `self.coredb.insert_many(&mut rows[..BATCH])` / `session.insert(&mut row)`
            // (`coredb::model::Crud`), and give the peers `RETURNING` too.
            (Case::InsertBatch, Library::Coredb) => {
                let rows = &self.rows[..BATCH];
                let params = params_of(rows);
                self.coredb.execute(&self.batch_sql, &params[..]).await?;
            }
            (Case::Copy, Library::Coredb) => {
                self.coredb.copy_in(&self.rows).await?;
            }
            (Case::RowByRow, Library::Coredb) => {
                let mut session = self.db.session().await?;
                insert_each_coredb(&mut session, self.rows.iter()).await?;
                session.commit().await?;
            }
            // ---- end of the switch point ----------------------------------------------------
            (Case::InsertBatch, Library::TokioPostgres) => {
                let params = params_of(&self.rows[..BATCH]);
                self.client.execute(&self.insert_batch, &params).await?;
            }
            (Case::Copy, Library::TokioPostgres) => {
                let sink = self.client.copy_in(COPY_BINARY).await?;
                copy_binary(sink, &self.rows).await?;
            }
            (Case::RowByRow, Library::TokioPostgres) => {
                let transaction = self.client.transaction().await?;
                insert_each_pg(&transaction, &self.insert_one, self.rows.iter()).await?;
                transaction.commit().await?;
            }
            (Case::InsertBatch, Library::Sqlx) => {
                let mut query = sqlx::query(&self.batch_sql);
                for u in &self.rows[..BATCH] {
                    query = query
                        .bind(&u.name)
                        .bind(&u.email)
                        .bind(u.age)
                        .bind(u.active);
                }
                query.execute(&mut self.sqlx).await?;
            }
            (Case::Copy, Library::Sqlx) => {
                // sqlx has no COPY encoder: the application writes the text format itself.
                let mut text = String::with_capacity(self.rows.len() * 48);
                for u in &self.rows {
                    let active = if u.active { 't' } else { 'f' };
                    text.push_str(&format!("{}\t{}\t{}\t{active}\n", u.name, u.email, u.age));
                }
                let mut copy = self.sqlx.copy_in_raw(COPY_TEXT).await?;
                copy.send(text.as_bytes()).await?;
                copy.finish().await?;
            }
            (Case::RowByRow, Library::Sqlx) => {
                let mut transaction = self.sqlx.begin().await?;
                insert_each_sqlx(&mut transaction, self.rows.iter()).await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// `n` operations of `case` by `library`; returns `n`.
    async fn repeat(&mut self, case: Case, library: Library, n: u64) -> Result<u64> {
        for _ in 0..n {
            self.once(case, library).await?;
        }
        Ok(n)
    }

    /// In a `--callgrind` child: `ops` single INSERTs by `library` in one transaction, after
    /// `warmup` in the same transaction; the transaction is committed afterwards.
    fn fixed_row_by_row(&mut self, fixed: &FixedRun, library: Library) -> Result<()> {
        let rows = |n: u64| self.rows.iter().cycle().take(n as usize);
        let (warmup, ops) = (rows(fixed.warmup), rows(fixed.ops));
        let done = fixed.ops;
        match library {
            Library::Coredb => {
                let mut session = fixed.block_on(self.db.session())?;
                fixed.block_on(insert_each_coredb(&mut session, warmup))?;
                fixed.measure(async {
                    insert_each_coredb(&mut session, ops).await?;
                    Ok(done)
                })?;
                fixed.block_on(session.commit())?;
            }
            Library::TokioPostgres => {
                let transaction = fixed.block_on(self.client.transaction())?;
                fixed.block_on(insert_each_pg(&transaction, &self.insert_one, warmup))?;
                fixed.measure(async {
                    insert_each_pg(&transaction, &self.insert_one, ops).await?;
                    Ok(done)
                })?;
                fixed.block_on(transaction.commit())?;
            }
            Library::Sqlx => {
                let mut transaction = fixed.block_on(self.sqlx.begin())?;
                fixed.block_on(insert_each_sqlx(&mut transaction, warmup))?;
                fixed.measure(async {
                    insert_each_sqlx(&mut transaction, ops).await?;
                    Ok(done)
                })?;
                fixed.block_on(transaction.commit())?;
            }
        }
        Ok(())
    }

    async fn close(self) -> Result<()> {
        let Bench {
            db, coredb, sqlx, ..
        } = self;
        drop(coredb);
        db.close().await;
        sqlx.close().await?;
        Ok(())
    }
}

async fn copy_binary(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    rows: &[NewUser],
) -> Result<()> {
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
    for u in rows {
        writer
            .as_mut()
            .write(&[&u.name, &u.email, &u.age, &u.active])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Operations of `case` in a counted run of `ops`: see [`Case::weight`].
pub fn fixed_ops(case: usize, ops: u64) -> u64 {
    (ops / CASES[case].weight()).max(1)
}

/// The cases and contenders of `--callgrind`: (case, column, what runs).
pub fn fixed_units() -> Vec<(usize, usize, String)> {
    CASES
        .iter()
        .enumerate()
        .flat_map(|(case, c)| {
            LIBRARIES.iter().enumerate().map(move |(column, library)| {
                (case, column, format!("{}, {}", library.name(), c.label()))
            })
        })
        .collect()
}

/// In a `--callgrind` child: `case` by the library of `column` on the tables of
/// [`create_schema`], [`FixedRun::ops`] operations after [`FixedRun::warmup`] (row by row:
/// single INSERTs in one transaction).
pub fn run_fixed(fixed: &FixedRun, case: usize, column: usize) -> Result<()> {
    let (case, library) = (CASES[case], LIBRARIES[column]);
    let mut bench = fixed.block_on(Bench::connect(&fixed.target))?;
    if case.inserts() {
        fixed.block_on(bench.client.batch_execute("TRUNCATE users_new"))?;
    }
    let result = if case == Case::RowByRow {
        bench.fixed_row_by_row(fixed, library)
    } else {
        fixed
            .block_on(bench.repeat(case, library, fixed.warmup))
            .and_then(|_| fixed.measure(bench.repeat(case, library, fixed.ops)))
    };
    fixed.block_on(bench.close())?;
    result
}

/// The cost table: `costs` per operation for every case and library, `method` saying how
/// they were counted. Goal (the session path at driver cost): coredb at most 1.0x raw
/// tokio-postgres, in instructions and allocations.
pub fn cost_table(samples: &CostSamples, costs: &[Cost], method: &str) -> Table {
    let columns: Vec<usize> = (0..LIBRARIES.len()).collect();
    let mut rows = Vec::new();
    for (index, case) in CASES.iter().enumerate() {
        for &cost in costs {
            let cells = samples.cells(index, cost, &columns);
            let mut row = costs::row(&case.label(), cost, case.per(), cells);
            if cost != Cost::Bytes {
                row.goals
                    .push(Goal::at_most("coredb/tokio-postgres", row.ratio(0, 1), 1.0));
            }
            rows.push(row);
        }
    }
    Table {
        title: "S4. Rows and inserts: cost per operation".into(),
        description: format!(
            "S4's cases on the same tables and connections (coredb: a checked-out \
             `Connection`, a `Session` for row by row). One operation is the whole fetch, the \
             {BATCH}-row INSERT statement or the whole COPY; row by row counts single INSERTs \
             in one open transaction (per INSERT). {method}"
        ),
        unit: "the unit named in each case".into(),
        higher_is_better: false,
        columns: LIBRARIES.iter().map(|l| l.name().to_owned()).collect(),
        rows,
        notes: vec![costs::ALLOCATOR_NOTE.into()],
    }
}

/// Runs the scenario: the rates, then the costs per operation.
pub async fn run(budget: &Budget, target: &Target) -> Result<Vec<Table>> {
    create_schema(target).await?;
    let mut bench = Bench::connect(target).await?;
    let mut rows = Vec::new();
    let mut costs = CostSamples::default();
    let mut coredb_copy = None;
    let mut coredb_row_by_row = None;
    for (case_index, case) in CASES.into_iter().enumerate() {
        let mut samples = vec![Samples::default(); LIBRARIES.len()];
        // Warm-up: statements prepared and caches filled for every contender.
        for library in LIBRARIES {
            if case.inserts() {
                bench.client.batch_execute("TRUNCATE users_new").await?;
            }
            bench.once(case, library).await?;
        }
        for rep in 0..budget.reps {
            eprintln!(
                "S4 {}: repetition {}/{}",
                case.label(),
                rep + 1,
                budget.reps
            );
            for (index, library) in rotated(&LIBRARIES.iter().enumerate().collect::<Vec<_>>(), rep)
            {
                if case.inserts() {
                    bench.client.batch_execute("TRUNCATE users_new").await?;
                }
                let mut clock = Stopwatch::new(budget.measure);
                while clock.next() {
                    bench.once(case, *library).await?;
                }
                samples[index].push(clock.rate());
                // Counted: a fixed number of operations (row by row: per INSERT, the BEGIN and
                // COMMIT of 10,000 spread over them).
                let ops = match case {
                    Case::RowByRow => 1,
                    _ => fixed_ops(case_index, budget.counted_ops),
                };
                let counted = Counted::sequential(ops, bench.repeat(case, *library, ops)).await?;
                let per_op = if case == Case::RowByRow {
                    ROWS as u64
                } else {
                    1
                };
                let counted = Counted {
                    ops: counted.ops * per_op,
                    ..counted
                };
                costs.push_counted(case_index, index, &counted);
            }
        }
        let mut row = Row::new(case.label(), samples.into_iter().map(Some).collect());
        row.goals
            .push(Goal::new("coredb/sqlx", row.ratio(0, 2), 1.0));
        if matches!(case, Case::Fetch(n) if n == ROWS as i64)
            || matches!(case, Case::Copy | Case::RowByRow)
        {
            row.goals.push(Goal::new(
                "coredb/tokio-postgres",
                row.ratio(0, 1),
                1.0 / 1.1,
            ));
        }
        match case {
            Case::Copy => coredb_copy = row.median(0),
            Case::RowByRow => coredb_row_by_row = row.median(0),
            _ => {}
        }
        rows.push(row);
    }
    bench.close().await?;
    drop_schema(target).await?;
    // COPY ≥ 10x row by row, both coredb, on the COPY row.
    let copy_speedup = coredb_copy.zip(coredb_row_by_row).map(|(c, r)| c / r);
    if let Some(row) = rows.iter_mut().find(|r| r.label == Case::Copy.label()) {
        row.goals.push(Goal::new(
            "coredb COPY/coredb row by row",
            copy_speedup,
            10.0,
        ));
    }
    let rates = Table {
        title: "S4. Rows and inserts".into(),
        description: format!(
            "A `users` table (bigint identity key, two text columns, int4, bool) holding \
             {ROWS} rows; inserts go to an empty copy of it, truncated before each measurement. \
             Each contender uses one connection for the whole scenario (coredb: a checked-out \
             `Connection`, and a `Session` for the row-by-row transaction; tokio-postgres: a \
             `Client` with statements prepared beforehand; sqlx: a `PgConnection`). Fetches map \
             every row into a `User` struct: coredb with `#[derive(coredb::FromRow)]`, sqlx with \
             a hand-written `FromRow` equal to what its derive writes (both read columns by \
             name), raw tokio-postgres by column index. The \
             one-statement insert is a {BATCH}-row `INSERT ... VALUES` with {} parameters. COPY: \
             binary COPY for coredb (model API) and tokio-postgres (`BinaryCopyInWriter`); sqlx \
             has no COPY encoder, so its rows are written as COPY text.",
            BATCH * 4
        ),
        unit: "operations/s (one operation = the whole fetch or insert)".into(),
        higher_is_better: true,
        columns: LIBRARIES.iter().map(|l| l.name().to_owned()).collect(),
        rows,
        notes: vec![
            "coredb's COPY row uses its model API (`#[coredb::model]` + `CopyIn::copy_in`, \
             binary COPY). Its two INSERT rows use the `Executor` API with the same hand-written \
             SQL as the peers, because the model API's `insert_many` / `insert` also return the \
             stored rows (`RETURNING`) into the structs; see the marked switch point in \
             `bench/src/scenarios/rows_inserts.rs`."
                .into(),
            "Goal \"within 1.1x of raw tokio-postgres\" on every 10,000-row case: ratio ≥ 1/1.1 \
             = 0.909."
                .into(),
        ],
    };
    let method = format!(
        "Counted in this process after each timed measurement over a fixed number of \
         operations: {} fetches of one row, a tenth of that for 100 rows, a thousandth (at \
         least one) for 10,000 rows or COPY, one 10,000-row transaction for row by row.",
        budget.counted_ops
    );
    Ok(vec![rates, cost_table(&costs, &Cost::ALLOCATOR, &method)])
}
