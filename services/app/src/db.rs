//! PostgreSQL: one primary that takes every write, and streaming replicas
//! that serve reads.
//!
//! Things this module shows on purpose:
//!
//! * **Reads and writes go to different places.** Deposits always run on the
//!   primary; balance and product reads go round-robin over the replicas when
//!   `READS=replicas`. A replica applies the primary's WAL a little later (or
//!   much later, when the lab injects lag), so a read right after a write can
//!   be *stale*. `?consistency=primary` is the escape hatch.
//! * **A dead dependency gives a fast, named error, not a hang.** Every
//!   connection wait is bounded ([`ACQUIRE_TIMEOUT`]), every query too, and
//!   failures become `503 {"error": "db-2 is unavailable: ..."}`. The
//!   pools reconnect by themselves when the database comes back.
//! * **A write whose outcome is unknown is reported as such.** With
//!   synchronous replication the primary's `COMMIT` waits for a replica; if
//!   the replica is gone it waits forever. We give up after `WRITE_TIMEOUT`
//!   with a 504 that says the outcome is unknown, and we throw that
//!   connection away: it is still stuck inside its `COMMIT`, and handing it to
//!   the next request would make that request wait too.
//! * **Start-up does not need the database.** The pools connect lazily; a
//!   background task retries until the primary answers, then applies the
//!   migrations (see [`Db::prepare`]).
//! * **The primary can move** (`FOLLOW_PRIMARY=on`, when a failover manager
//!   runs). Then no URL is "the primary": every half second, and at once
//!   after a write fails, each node is asked `SELECT pg_is_in_recovery()`
//!   (false: it takes writes), and writes go to the node that said so,
//!   reads to those that replay its changes ([`Db::follow_primary`]). This
//!   is what libpq's `target_session_attrs=read-write` does for one
//!   connection, done for the whole pool. While no node takes writes (a
//!   failover under way) a write gets a quick 503 that says so, never a 500.
//!
//! All SQL is parameterised (`$1`, `$2` with binds): no value is ever pasted
//! into a query string.

use std::{
    str::FromStr,
    sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, PgPool,
};

use crate::{
    config::{Config, DbTarget, Reads},
    error::AppError,
    metrics::Metrics,
};

/// How long a request may wait for a database connection (including opening
/// a new one). Short, so a dead database is a quick 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a read query may run beyond its deliberate cost.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per pool: enough for the lab's load, small enough that a few
/// servers times a few pools stay far below PostgreSQL's `max_connections`.
pub const POOL_SIZE: u32 = 10;
/// How often each node is asked whether it takes writes, when the primary
/// can move. Writes resume at most this long after a promotion.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one node may take to say what it is.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// `primary` while no node takes writes.
const NO_PRIMARY: usize = usize::MAX;
/// What the last probe heard from a node.
const HEARD_NOTHING: u8 = 0;
const HEARD_PRIMARY: u8 = 1;
const HEARD_REPLICA: u8 = 2;

/// The embedded migrations (`services/app/migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The query that burns CPU inside PostgreSQL: it counts `$1` generated rows.
/// `generate_series` sits in the select list (a streaming "ProjectSet" plan),
/// not in `FROM`, where PostgreSQL would first store every row in a
/// tuplestore that spills to disk once it outgrows `work_mem`.
const BURN_SQL: &str = "SELECT count(*) FROM (SELECT generate_series(1, $1::bigint)) AS g";

/// A product read: the row plus `$2` rows of counting work, in one statement.
const PRODUCT_SQL: &str = "SELECT p.id, p.name, p.price_cents \
     FROM products AS p \
     CROSS JOIN (SELECT count(*) FROM (SELECT generate_series(1, $2::bigint)) AS g) AS work \
     WHERE p.id = $1";

/// A deposit: create the account on first use, otherwise add to it.
/// `bigint + bigint` raises SQLSTATE 22003 on overflow, which we answer as 409.
const DEPOSIT_SQL: &str = "INSERT INTO accounts (id, balance) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance, updated_at = now() \
     RETURNING balance";

/// The ledger line written in the same transaction as the balance.
const LEDGER_SQL: &str = "INSERT INTO deposits (account_id, amount) VALUES ($1, $2)";

/// Until calibration has measured this machine, assume this many counted
/// rows per millisecond (a modest laptop core).
const DEFAULT_ROWS_PER_MS: u64 = 20_000;

/// The role of a database, used as the `target` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes writes.
    Primary,
    /// Read-only streaming replica.
    Replica,
}

/// One database and its connection pool.
#[derive(Debug)]
pub struct DbNode {
    /// Display name (`db-1`).
    pub name: String,
    /// Primary or replica, as configured (the part it plays now may differ
    /// when the primary can move).
    pub role: Role,
    pool: PgPool,
    /// What it said at the last probe (HEARD_*).
    heard: AtomicU8,
}

impl DbNode {
    /// Connections this pool holds right now (idle and in use).
    pub fn pool_size(&self) -> u32 {
        self.pool.size()
    }
}

/// A product row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct Product {
    /// 1..=1000 for the seeded catalogue.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Price in cents (integers: money is never a float).
    pub price_cents: i64,
    /// Its place among the best sellers (1 sold the most); None if it never
    /// sold. Filled by the page's second query; `serde(default)` lets a
    /// cache entry written before this field existed still decode.
    #[sqlx(skip)]
    #[serde(default)]
    pub sales_rank: Option<i64>,
    /// Units sold, every order together.
    #[sqlx(skip)]
    #[serde(default)]
    pub units_sold: i64,
}

/// The primary, the replicas and the read policy.
#[derive(Debug)]
pub struct Db {
    /// Every database, the configured primary first.
    nodes: Vec<DbNode>,
    /// Index in `nodes` of the node that takes writes now (NO_PRIMARY: none
    /// known). Always 0 unless the primary can move.
    primary: AtomicUsize,
    follow: bool,
    /// Wakes the follower at once (a write just failed).
    probe_now: tokio::sync::Notify,
    reads: Reads,
    next_replica: AtomicUsize,
    migrated: AtomicBool,
    rows_per_ms: AtomicU64,
    product_query_ms: u64,
    write_timeout: Duration,
}

/// Why a database operation did not give a result.
enum Failure {
    /// A query or connection error.
    Sql(sqlx::Error),
    /// The operation exceeded its time limit; its connection was discarded.
    TimedOut,
}

impl Db {
    /// Builds the pools without connecting: the first query (or
    /// [`Db::prepare`]) opens connections, so this never fails because a
    /// database is down.
    pub fn new(config: &Config) -> Result<Self, AppError> {
        let node = |target: &DbTarget, role| -> Result<DbNode, AppError> {
            let options = PgConnectOptions::from_str(&target.url)
                .map_err(|e| AppError::Internal(format!("{}: {e}", target.name)))?
                .application_name(&config.server_name)
                // A statement that runs away (a stuck lock, a huge scan) is
                // stopped by PostgreSQL itself, not only abandoned by us.
                .options([("statement_timeout", "30s")])
                // Our own tracing says what matters; sqlx would log every query.
                .disable_statement_logging();
            let pool = PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                .min_connections(0)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // Checks a pooled connection before use, so one left broken by
                // a database restart is replaced instead of failing a request.
                .test_before_acquire(true)
                .connect_lazy_with(options);
            Ok(DbNode {
                name: target.name.clone(),
                role,
                pool,
                heard: AtomicU8::new(HEARD_NOTHING),
            })
        };
        let mut nodes = vec![node(&config.primary, Role::Primary)?];
        for r in &config.replicas {
            nodes.push(node(r, Role::Replica)?);
        }
        Ok(Self {
            nodes,
            // The configured primary until the first probe says otherwise.
            primary: AtomicUsize::new(0),
            follow: config.follow_primary,
            probe_now: tokio::sync::Notify::new(),
            reads: config.reads,
            next_replica: AtomicUsize::new(0),
            migrated: AtomicBool::new(false),
            rows_per_ms: AtomicU64::new(DEFAULT_ROWS_PER_MS),
            product_query_ms: config.product_query_ms,
            write_timeout: config.write_timeout,
        })
    }

    /// The primary now: the configured one, or, when the primary can move,
    /// the node that last said it takes writes (the configured one while
    /// none does).
    pub fn primary(&self) -> &DbNode {
        self.nodes
            .get(self.primary.load(Ordering::Acquire))
            .unwrap_or(&self.nodes[0])
    }

    /// Where a write goes now; a quick 503 while no node takes writes.
    fn write_node(&self) -> Result<&DbNode, AppError> {
        self.nodes
            .get(self.primary.load(Ordering::Acquire))
            .ok_or_else(|| {
                AppError::unavailable(
                    "the primary",
                    "no database node takes writes right now (a failover may be under way); retry in a few seconds",
                )
            })
    }

    /// The part `node` plays now, for the metrics.
    fn role_now(&self, node: &DbNode) -> Role {
        if std::ptr::eq(node, self.primary()) {
            Role::Primary
        } else {
            Role::Replica
        }
    }

    /// Every configured database, primary first.
    pub fn nodes(&self) -> impl Iterator<Item = &DbNode> {
        self.nodes.iter()
    }

    /// Keeps `primary` on the node that takes writes, when the primary can
    /// move (a failover manager runs): asks every node every
    /// [`PROBE_INTERVAL`], and at once when a write fails. Runs forever, as a
    /// background task; returns at once when the primary cannot move.
    pub async fn follow_primary(&self) {
        if !self.follow {
            return;
        }
        loop {
            // Every node is asked at once, and each answer is used as it
            // comes: a crashed node answers nothing until PROBE_TIMEOUT, and
            // a new primary found meanwhile must not wait for it.
            let mut asked: futures::stream::FuturesUnordered<_> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| async move { (i, probe(node).await) })
                .collect();
            let mut said = vec![None; self.nodes.len()];
            while let Some((i, answer)) = futures::StreamExt::next(&mut asked).await {
                said[i] = answer;
                self.nodes[i].heard.store(
                    match answer {
                        Some(false) => HEARD_PRIMARY,
                        Some(true) => HEARD_REPLICA,
                        None => HEARD_NOTHING,
                    },
                    Ordering::Relaxed,
                );
                let before = self.primary.load(Ordering::Acquire);
                if let Some(now) = adopt_at_once(before, i, answer) {
                    self.set_primary(before, now);
                }
            }
            let before = self.primary.load(Ordering::Acquire);
            self.set_primary(before, choose_primary(before, &said));
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = self.probe_now.notified() => {}
            }
        }
    }

    /// Writes go to node `now` from here on (none: [`NO_PRIMARY`]).
    fn set_primary(&self, before: usize, now: usize) {
        if now != before {
            self.primary.store(now, Ordering::Release);
            match self.nodes.get(now) {
                Some(n) => tracing::info!(db = %n.name, "the primary is now {}", n.name),
                None => tracing::warn!("no database node takes writes"),
            }
        }
    }

    /// Whether the migrations have been applied by this process.
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// Counted rows per millisecond used to size the product query.
    pub fn rows_per_ms(&self) -> u64 {
        self.rows_per_ms.load(Ordering::Relaxed)
    }

    /// Where the next read goes: the primary when asked for, when
    /// `READS=primary` or when there is no replica; otherwise the next
    /// replica in round-robin order.
    pub fn read_node(&self, force_primary: bool) -> &DbNode {
        if force_primary || self.reads == Reads::Primary || self.nodes.len() == 1 {
            return self.primary();
        }
        if !self.follow {
            let replicas = &self.nodes[1..];
            let i = self.next_replica.fetch_add(1, Ordering::Relaxed) % replicas.len();
            return &replicas[i];
        }
        // The nodes that said they replay the primary's changes; reads go
        // on there while the primary is down or being replaced.
        let replicas: Vec<&DbNode> = self
            .nodes
            .iter()
            .filter(|n| n.heard.load(Ordering::Relaxed) == HEARD_REPLICA)
            .collect();
        if replicas.is_empty() {
            return self.primary();
        }
        let i = self.next_replica.fetch_add(1, Ordering::Relaxed) % replicas.len();
        replicas[i]
    }

    /// Waits for the primary, applies the migrations, then measures how fast
    /// this PostgreSQL counts rows. Retries with backoff, logging each
    /// attempt, until it succeeds: a container may well start before its
    /// database. Meant to run as a background task.
    pub async fn prepare(&self) {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1u32;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), MIGRATOR.run(&self.primary().pool))
                .await
            {
                Ok(Ok(())) => break,
                Ok(Err(err)) => tracing::warn!(
                    attempt,
                    db = %self.primary().name,
                    error = %err,
                    retry_in = ?delay,
                    "cannot apply migrations yet; retrying"
                ),
                Err(_) => tracing::warn!(
                    attempt,
                    db = %self.primary().name,
                    retry_in = ?delay,
                    "migrations did not finish within 60s; retrying"
                ),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
        self.migrated.store(true, Ordering::Release);
        tracing::info!(db = %self.primary().name, attempt, "migrations applied");

        if self.product_query_ms > 0 {
            match self.calibrate().await {
                Ok(rate) => {
                    self.rows_per_ms.store(rate, Ordering::Relaxed);
                    tracing::info!(
                        rows_per_ms = rate,
                        product_query_ms = self.product_query_ms,
                        rows_per_product_read = rate * self.product_query_ms,
                        "calibrated the product query's CPU work"
                    );
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    rows_per_ms = DEFAULT_ROWS_PER_MS,
                    "could not calibrate the product query; using the default rate"
                ),
            }
        }
    }

    /// Measures how many rows per millisecond [`BURN_SQL`] counts here. Two
    /// sizes are timed and the difference used, which cancels the network
    /// round trip and planning time; the fastest of several runs filters out
    /// noise from other processes.
    ///
    /// Both sizes take a few milliseconds, not tens: a database limited to
    /// a quarter of a core (`lab resize --cpus 0.25`) may run 25 ms in each
    /// 100 ms and then waits. A run longer than its share is timed with that
    /// wait in it, and a rate measured so was as much as four times too low,
    /// by chance of where the runs fell: product reads then cost a fraction
    /// of `PRODUCT_QUERY_MS`, a different one after each start. A run of a
    /// few milliseconds usually fits in the share, and the fastest one did.
    async fn calibrate(&self) -> Result<u64, sqlx::Error> {
        const SMALL: i64 = 10_000;
        const LARGE: i64 = 110_000;
        let mut conn = self.primary().pool.acquire().await?;
        let small = fastest_run(&mut conn, SMALL).await?;
        let large = fastest_run(&mut conn, LARGE).await?;
        let ms = large.saturating_sub(small).as_secs_f64() * 1000.0;
        let rate = if ms > 0.0 {
            ((LARGE - SMALL) as f64 / ms) as u64
        } else {
            DEFAULT_ROWS_PER_MS
        };
        Ok(rate.clamp(1_000, 1_000_000_000))
    }

    /// Reads product `id`'s page: its row (with the deliberate cost of
    /// `PRODUCT_QUERY_MS`, 0 for none), then its sales rank. Two queries on
    /// one connection, each counted, like a page an ORM would build; the
    /// pool's liveness check before them is a third round trip to the
    /// database (`test_before_acquire`). `Ok(None)`: no such product.
    pub async fn product(&self, id: i64, metrics: &Metrics) -> Result<Option<Product>, AppError> {
        let node = self.read_node(false);
        let rows = self.rows_per_ms().saturating_mul(self.product_query_ms);
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        let limit = QUERY_TIMEOUT + Duration::from_millis(self.product_query_ms * 4);
        let queries = metrics.db_queries_series(self.role_now(node), &node.name);
        queries.inc();
        run(node, limit, move |conn| {
            Box::pin(async move {
                let Some(mut product) = sqlx::query_as::<_, Product>(PRODUCT_SQL)
                    .bind(id)
                    .bind(rows)
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok(None);
                };
                queries.inc();
                let sales = sqlx::query_as::<_, (i64, i64)>(lab_contract::app::SALES_RANK_SQL)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some((rank, sold)) = sales {
                    product.sales_rank = Some(rank);
                    product.units_sold = sold;
                }
                Ok(Some(product))
            })
        })
        .await
        .map_err(|f| f.into_error(node))
    }

    /// Reads the balance of `account`, from where the read policy says.
    /// Returns the balance (None: no such account) and the database asked.
    pub async fn balance(
        &self,
        account: i64,
        force_primary: bool,
        metrics: &Metrics,
    ) -> Result<(Option<i64>, &str), AppError> {
        // A read that asks for the primary gets the primary or a 503: while
        // no node takes writes, a replica's answer would pass for the
        // primary's, and an audit would call writes lost that are only
        // stranded on the node that died.
        let node = if force_primary {
            self.write_node()?
        } else {
            self.read_node(false)
        };
        metrics.db_query(self.role_now(node), &node.name);
        let balance = run(node, QUERY_TIMEOUT, move |conn| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT balance FROM accounts WHERE id = $1")
                    .bind(account)
                    .fetch_optional(&mut *conn)
                    .await
            })
        })
        .await
        .map_err(|f| f.into_error(node))?;
        Ok((balance, &node.name))
    }

    /// Adds `amount` cents to `account` (creating it) in one transaction on
    /// the primary, and returns the new balance and the node that took it.
    pub async fn deposit(
        &self,
        account: i64,
        amount: i64,
        metrics: &Metrics,
    ) -> Result<(i64, &str), AppError> {
        let node = self.write_node()?;
        metrics.db_query(Role::Primary, &node.name);
        let result = run(node, self.write_timeout, move |conn| {
            Box::pin(async move {
                let mut tx = conn.begin().await?;
                let balance = sqlx::query_scalar::<_, i64>(DEPOSIT_SQL)
                    .bind(account)
                    .bind(amount)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(LEDGER_SQL)
                    .bind(account)
                    .bind(amount)
                    .execute(&mut *tx)
                    .await?;
                // With synchronous replication, this is where we may wait.
                tx.commit().await?;
                Ok(balance)
            })
        })
        .await;
        if self.follow && result.as_ref().is_err_and(Failure::may_be_a_failover) {
            // The node may have died or been demoted: look again now.
            self.probe_now.notify_one();
        }
        match result {
            Ok(balance) => Ok((balance, &node.name)),
            Err(Failure::TimedOut) => Err(AppError::WriteTimeout {
                db: node.name.clone(),
                timeout: humantime::format_duration(self.write_timeout).to_string(),
            }),
            Err(Failure::Sql(err)) if sqlstate(&err).as_deref() == Some("22003") => Err(
                AppError::Conflict(format!("the balance of account {account} would overflow")),
            ),
            Err(failure) => Err(failure.into_error(node)),
        }
    }

    /// Checks one database: reachable, and the schema is there (on a
    /// replica, that also means replication has delivered it).
    pub async fn check(node: &DbNode) -> Result<(), String> {
        let probe = async {
            let mut conn = node.pool.acquire().await?;
            sqlx::query_scalar::<_, bool>(
                "SELECT to_regclass('public.products') IS NOT NULL \
                 AND to_regclass('public.accounts') IS NOT NULL",
            )
            .fetch_one(&mut *conn)
            .await
        };
        match tokio::time::timeout(ACQUIRE_TIMEOUT + Duration::from_secs(1), probe).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err("schema not migrated yet".into()),
            Ok(Err(err)) => Err(short(&err)),
            Err(_) => Err("no answer within 3s".into()),
        }
    }
}

/// Asks one node whether it replays another's changes: `Some(false)` for a
/// primary, `Some(true)` for a replica, `None` when it does not answer.
async fn probe(node: &DbNode) -> Option<bool> {
    run(node, PROBE_TIMEOUT, |conn| {
        Box::pin(async move {
            sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                .fetch_one(&mut *conn)
                .await
        })
    })
    .await
    .ok()
}

/// Before a round of probes is over: the node to write to now, when node
/// `i` has just said `answer`. Only while no node is known to take writes
/// (a failover under way) does the first node that says it does get the
/// writes at once; otherwise the round's end decides ([`choose_primary`]),
/// so a primary that answers late is not dropped for one that answers early.
pub fn adopt_at_once(current: usize, i: usize, answer: Option<bool>) -> Option<usize> {
    (current == NO_PRIMARY && answer == Some(false)).then_some(i)
}

/// The node to write to, given what each node said (`Some(false)`: it takes
/// writes). The current one while it still says so; else the first that
/// does; else none. Two nodes taking writes at once (a split brain, which a
/// manager works to end) do not make the app hop between them.
pub fn choose_primary(current: usize, said: &[Option<bool>]) -> usize {
    if said.get(current) == Some(&Some(false)) {
        return current;
    }
    said.iter()
        .position(|s| *s == Some(false))
        .unwrap_or(NO_PRIMARY)
}

/// Runs of each size in calibration: enough that one of them falls inside
/// the database's CPU share on a busy, limited machine.
const CALIBRATION_RUNS: usize = 9;

/// The fastest of [`CALIBRATION_RUNS`] runs of [`BURN_SQL`] counting `n` rows.
async fn fastest_run(conn: &mut PgConnection, n: i64) -> Result<Duration, sqlx::Error> {
    let mut best = Duration::MAX;
    for _ in 0..CALIBRATION_RUNS {
        let start = Instant::now();
        sqlx::query_scalar::<_, i64>(BURN_SQL)
            .bind(n)
            .fetch_one(&mut *conn)
            .await?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// Runs `op` on a connection from `node`'s pool within `limit`.
///
/// On timeout the connection is detached from the pool and dropped (closing
/// its socket): it may be stuck in a `COMMIT` that waits for a synchronous
/// replica, or in a query on a frozen server, and must never serve another
/// request.
async fn run<T>(
    node: &DbNode,
    limit: Duration,
    op: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
) -> Result<T, Failure> {
    let mut conn = node.pool.acquire().await.map_err(Failure::Sql)?;
    let outcome = tokio::time::timeout(limit, op(&mut conn)).await;
    match outcome {
        Ok(result) => result.map_err(Failure::Sql),
        Err(_elapsed) => {
            let raw = conn.detach();
            drop(raw);
            tracing::warn!(db = %node.name, ?limit, "database operation timed out; connection discarded");
            Err(Failure::TimedOut)
        }
    }
}

impl Failure {
    /// A failure that a change of primary explains: the node is gone, cut
    /// off, shutting down, or read-only now.
    fn may_be_a_failover(&self) -> bool {
        match self {
            Failure::TimedOut => true,
            Failure::Sql(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| c == "25006" || c.starts_with("08") || c.starts_with("57")),
            Failure::Sql(_) => true,
        }
    }

    /// Turns a failure into the answer the client gets: 503 naming the
    /// database when it is unreachable or not ready, 500 for anything that
    /// can only be a bug of ours (a malformed query, a type mismatch).
    fn into_error(self, node: &DbNode) -> AppError {
        let err = match self {
            Failure::TimedOut => {
                return AppError::unavailable(&node.name, "no answer in time");
            }
            Failure::Sql(err) => err,
        };
        let unavailable = |reason: String| AppError::unavailable(&node.name, reason);
        match &err {
            sqlx::Error::PoolTimedOut => unavailable(format!(
                "no connection within {}s",
                ACQUIRE_TIMEOUT.as_secs()
            )),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => unavailable(short(&err)),
            sqlx::Error::Database(db_err) => {
                let code = db_err.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    "42P01" => unavailable("schema not migrated yet".into()),
                    // A "primary" that is read-only is really a replica
                    // (e.g. during a failover): not ready for writes.
                    "25006" => unavailable("database is read-only".into()),
                    c if ["08", "53", "57", "58"]
                        .iter()
                        .any(|class| c.starts_with(class)) =>
                    {
                        unavailable(short(&err))
                    }
                    // Serialization failures and deadlocks: retryable, not a bug.
                    "40001" | "40P01" => unavailable(short(&err)),
                    _ => AppError::Internal(format!("{}: {err}", node.name)),
                }
            }
            _ => AppError::Internal(format!("{}: {err}", node.name)),
        }
    }
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The first line of an error, capped: enough to name the cause in a JSON
/// answer without dumping a driver's whole message.
pub(crate) fn short(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_primary_gets_the_writes_before_a_dead_node_times_out() {
        // A failover under way: the first node that says it takes writes
        // gets them, whatever the others have not answered yet.
        assert_eq!(adopt_at_once(NO_PRIMARY, 2, Some(false)), Some(2));
        assert_eq!(adopt_at_once(NO_PRIMARY, 1, Some(true)), None);
        assert_eq!(adopt_at_once(NO_PRIMARY, 1, None), None);
        // A primary known: an early answer changes nothing until the round
        // is over (the current one may yet say it still takes writes).
        assert_eq!(adopt_at_once(0, 1, Some(false)), None);
        assert_eq!(adopt_at_once(0, 0, Some(false)), None);
    }

    #[test]
    fn writes_follow_the_node_that_takes_them() {
        // db-1 still primary: stay.
        assert_eq!(choose_primary(0, &[Some(false), Some(true), Some(true)]), 0);
        // db-1 gone, db-2 promoted: move.
        assert_eq!(choose_primary(0, &[None, Some(false), Some(true)]), 1);
        // Mid-failover: nobody takes writes.
        assert_eq!(
            choose_primary(0, &[None, Some(true), Some(true)]),
            NO_PRIMARY
        );
        // Two say so (the old primary not yet demoted): no hopping.
        assert_eq!(choose_primary(1, &[Some(false), Some(false), None]), 1);
        assert_eq!(
            choose_primary(NO_PRIMARY, &[Some(false), Some(false), None]),
            0
        );
    }
}
