//! Scenarios: what a virtual user does, one request at a time.
//!
//! A load test is only as meaningful as the behaviour it imitates. Hammering
//! `GET /` tells you how fast the balancer forwards bytes; it cannot show a lost
//! session or a stale balance. So each virtual user here plays a small part
//! with a memory of its own:
//!
//! - `browse`: reads product pages. Most reads go to a small "hot set" of 20
//!   products, the rest anywhere in 1..=1000, as on a real shop where a few
//!   items are on the front page. With the cache on, the hot set is served from
//!   Redis and the database rests: the report counts cache hits and misses.
//! - `sessions`: logs in, then keeps asking `GET /me` (and now and then puts an
//!   item in its cart). Each user has its own cookie jar, so where the session
//!   lives (one server's memory, Redis, a signed cookie) decides what happens
//!   when requests land on different servers or a server dies.
//! - `bank`: deposits into its own account, then reads the balance back,
//!   alternately. Each user has its own account, so any balance lower than its
//!   own acknowledged deposits can only be a stale read.
//! - `mixed`: users take the three parts in turn (user 0 browses, user 1 logs
//!   in, user 2 banks, user 3 browses...).
//! - `ping`: `GET /` and nothing else; the cheapest request there is, used to
//!   measure the driver itself (`bench/load/run.sh`).
//! - `work`: `GET /work?ms=N`, each request burning N ms of a server's CPU:
//!   the way to fill a server up on purpose (the sizing lessons). With
//!   `--heavy-share P` a share P of the requests are heavy (`--heavy-ms`):
//!   requests of uneven cost, where the balancer's strategy matters.
//! - `render`: a page as most sites make one: the server works on it
//!   (`GET /work`, `--work-ms`), then reads its data from the database
//!   (`GET /products/ID`), one request after the other. Every page served is
//!   one more database query, so adding servers adds database load.
//! - `pages`: whole product pages (`GET /pages/{id}`), the product drawn from
//!   a Zipf law over the catalogue: the k-th most popular product is asked
//!   for about k^-1.2 as often as the first, so a few pages are everywhere
//!   and a long tail is rare. The server keeps as many pages in its memory as its
//!   memory allows (lesson `bigger-server`).
//!
//! A user is a state machine: `step` sends exactly one request and updates the
//! user's memory from the answer. The load models (closed and open, see
//! `mod.rs`) only decide *when* a user takes its next step.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Method;
use lab_contract::app;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::checkers::{self, Ledger, SessionVerdict, WriteOutcome, DEPOSIT_CENTS};
use super::http::{Answer, Conn, Failure, Target};
use super::stats::Class;

/// `browse`: the products of the app's seeded catalogue, 1 to this.
pub const CATALOGUE: i64 = 1000;
/// `browse`: the hot set, products 1 to this, which get `hot_share` of the
/// reads (the rest go anywhere in the catalogue, hot set included). With
/// `--hot-share 0` reads spread evenly over the whole catalogue.
pub const HOT_PRODUCTS: i64 = 20;

/// What the virtual users do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Product pages with a hot set: shows what a cache does.
    Browse,
    /// Log in, then `GET /me` again and again: shows lost sessions.
    Sessions,
    /// Deposit, read the balance back: shows stale reads and lost writes.
    Bank,
    /// Users share out browse, sessions and bank.
    Mixed,
    /// `GET /` only: measures the driver itself (benchmarks).
    Ping,
    /// `GET /work?ms=N` (see --work-ms): CPU-bound requests that fill a server.
    Work,
    /// Server work, then a product read from the database, in turn.
    Render,
    /// Whole product pages, Zipf-distributed: served from the server's memory when it holds them.
    Pages,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Browse => "browse",
            Scenario::Sessions => "sessions",
            Scenario::Bank => "bank",
            Scenario::Mixed => "mixed",
            Scenario::Ping => "ping",
            Scenario::Work => "work",
            Scenario::Render => "render",
            Scenario::Pages => "pages",
        }
    }
}

/// The kind of one request, as named in the history file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Ping,
    Work,
    Product,
    Page,
    Login,
    Me,
    AddToCart,
    Deposit,
    Balance,
    Audit,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Ping => "ping",
            OpKind::Work => "work",
            OpKind::Product => "product",
            OpKind::Page => "page",
            OpKind::Login => "login",
            OpKind::Me => "me",
            OpKind::AddToCart => "cart_add",
            OpKind::Deposit => "deposit",
            OpKind::Balance => "balance",
            OpKind::Audit => "audit",
        }
    }
}

/// Whether an operation took effect, for the history: a write whose answer
/// never came is `Unknown`, not `Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Everything one step produced.
#[derive(Debug)]
pub struct OpResult {
    pub kind: OpKind,
    pub class: Class,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub failure: Option<Failure>,
    pub served_by: Option<HeaderValue>,
    /// From the scheduled (open model) or actual (closed model) start.
    pub latency: Duration,
    /// Product id, deposit amount, balance read...
    pub value: Option<i64>,
    pub session_loss: bool,
    pub stale_read: bool,
    pub cache_hit: Option<bool>,
}

/// Things every user of a run shares.
pub struct RunCtx {
    pub target: Arc<Target>,
    pub timeout: Duration,
    pub scenario: Scenario,
    /// Bank accounts are `account_base + user id`: random per run, so that
    /// two runs (or two students on one lab) never share an account.
    pub account_base: u64,
    pub bank: BankBook,
    /// `work`: CPU milliseconds each request asks for.
    pub work_ms: u32,
    /// `pages`, `browse` and `mixed`: CPU milliseconds the server adds to
    /// each page (0: none).
    pub page_ms: u32,
    /// `browse`: the share of reads that go to the 20 hot products.
    pub hot_share: f64,
    /// `work`: heavy requests, as (CPU ms, share of requests).
    pub heavy: Option<(u32, f64)>,
}

/// The ledgers of every bank user, kept outside the users so that the final
/// audit sees them even for a user whose last request was cut off.
#[derive(Default)]
pub struct BankBook {
    pub entries: Mutex<Vec<BankEntry>>,
}

pub struct BankEntry {
    pub user: u32,
    pub account: u64,
    pub ledger: Arc<Mutex<Ledger>>,
}

/// `sessions`: a visit ends (the user logs in afresh, with an empty cart)
/// once the cart holds this many lines: a user who stayed forever would
/// fill it to the app's limit and earn 409s the site is right to give.
const FULL_ENOUGH: usize = app::MAX_CART_LINES - 5;

/// `mixed`: the parts users share out, user id modulo their number.
const MIXED: [Scenario; 3] = [Scenario::Browse, Scenario::Sessions, Scenario::Bank];
/// How many parts `mixed` has.
pub const MIXED_PARTS: u32 = MIXED.len() as u32;

/// `pages`: the Zipf exponent. Above 1 the head of the catalogue takes
/// most reads, as measured for web pages and shop items (often 1 to 1.5).
pub const PAGES_ZIPF_EXPONENT: f64 = 1.2;
/// `pages`: the catalogue the pages are drawn from (the seeded products).
pub const PAGES_CATALOGUE: u64 = 1000;

enum Role {
    Ping,
    Pages {
        popularity: rand_distr::Zipf<f64>,
        ms: u32,
    },
    Work {
        ms: u32,
        heavy: Option<(u32, f64)>,
    },
    Render {
        ms: u32,
        hot_share: f64,
        work_next: bool,
    },
    Browse {
        hot_share: f64,
        /// The server's own work on each page (0: none).
        ms: u32,
    },
    Sessions {
        logged_in: bool,
        since_login: u64,
    },
    Bank {
        account: u64,
        ledger: Arc<Mutex<Ledger>>,
        deposit_next: bool,
    },
}

/// One virtual user: a connection with its cookies, a part to play, and its
/// memory of what the lab told it.
pub struct User {
    pub id: u32,
    pub name: String,
    conn: Conn,
    role: Role,
    rng: SmallRng,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn class_of(status: u16) -> Class {
    match status {
        200..=299 => Class::Ok,
        400..=499 => Class::Http4xx,
        500..=599 => Class::Http5xx,
        _ => Class::Other,
    }
}

fn failure_class(f: Failure) -> Class {
    match f {
        Failure::Connect | Failure::Broken => Class::Connect,
        Failure::Timeout => Class::Timeout,
    }
}

impl User {
    pub fn new(id: u32, ctx: &RunCtx) -> Self {
        let part = match ctx.scenario {
            Scenario::Mixed => MIXED[id as usize % MIXED.len()],
            s => s,
        };
        let role = match part {
            Scenario::Ping => Role::Ping,
            Scenario::Pages => Role::Pages {
                popularity: rand_distr::Zipf::new(PAGES_CATALOGUE as f64, PAGES_ZIPF_EXPONENT)
                    .expect("a Zipf law over a non-empty catalogue"),
                ms: ctx.page_ms,
            },
            Scenario::Work => Role::Work {
                ms: ctx.work_ms,
                heavy: ctx.heavy,
            },
            Scenario::Render => Role::Render {
                ms: ctx.work_ms,
                hot_share: ctx.hot_share,
                work_next: true,
            },
            Scenario::Sessions => Role::Sessions {
                logged_in: false,
                since_login: 0,
            },
            Scenario::Bank => {
                let account = ctx.account_base + u64::from(id);
                let ledger = Arc::new(Mutex::new(Ledger::default()));
                lock(&ctx.bank.entries).push(BankEntry {
                    user: id,
                    account,
                    ledger: Arc::clone(&ledger),
                });
                Role::Bank {
                    account,
                    ledger,
                    deposit_next: true,
                }
            }
            Scenario::Browse | Scenario::Mixed => Role::Browse {
                hot_share: ctx.hot_share,
                ms: ctx.page_ms,
            },
        };
        User {
            id,
            name: format!("u{id}"),
            conn: Conn::new(Arc::clone(&ctx.target), ctx.timeout),
            role,
            rng: SmallRng::seed_from_u64(ctx.account_base ^ (u64::from(id) << 20)),
        }
    }

    /// The bank account this user owns, if it banks.
    pub fn account(&self) -> Option<u64> {
        match &self.role {
            Role::Bank { account, .. } => Some(*account),
            _ => None,
        }
    }

    /// Sends one request. `started` is when it should have started: the
    /// scheduled time in the open model, so lateness counts as latency.
    pub async fn step(&mut self, started: Instant) -> OpResult {
        match &mut self.role {
            Role::Ping => {
                let r = self.conn.request(Method::GET, "/", None).await;
                simple(OpKind::Ping, r.as_ref().map_err(|f| *f), started, None)
            }
            Role::Work { ms, heavy } => {
                let ms = match *heavy {
                    Some((heavy_ms, share)) if self.rng.random_bool(share) => heavy_ms,
                    _ => *ms,
                };
                self.work(ms, started).await
            }
            Role::Render {
                ms,
                hot_share,
                work_next,
            } => {
                let work = *work_next;
                *work_next = !work;
                if work {
                    let ms = *ms;
                    self.work(ms, started).await
                } else {
                    let hot_share = *hot_share;
                    self.product(hot_share, 0, started).await
                }
            }
            Role::Pages { popularity, ms } => {
                // Rank k is product k: product 1 is the most popular.
                let id = self.rng.sample(*popularity) as i64;
                let path = match *ms {
                    0 => format!("/pages/{id}"),
                    ms => format!("/pages/{id}?ms={ms}"),
                };
                let r = self.conn.request(Method::GET, &path, None).await;
                simple(OpKind::Page, r.as_ref().map_err(|f| *f), started, Some(id))
            }
            Role::Browse { hot_share, ms } => {
                let (hot_share, ms) = (*hot_share, *ms);
                self.product(hot_share, ms, started).await
            }
            Role::Sessions {
                logged_in,
                since_login,
            } => {
                if !*logged_in {
                    // A fresh login starts a fresh session: old cookies go.
                    self.conn.jar.clear();
                    let body = serde_json::to_string(&app::Login {
                        user: self.name.clone(),
                    })
                    .expect("a login serialises");
                    let r = self
                        .conn
                        .request(Method::POST, "/login", Some(Bytes::from(body)))
                        .await;
                    let res = simple(OpKind::Login, r.as_ref().map_err(|f| *f), started, None);
                    if res.class == Class::Ok {
                        *logged_in = true;
                        *since_login = 0;
                    }
                    return res;
                }
                *since_login += 1;
                let (kind, r) = if *since_login % 5 == 0 {
                    let product: i64 = self.rng.random_range(1..=1000);
                    let body = format!(r#"{{"product_id":{product},"quantity":1}}"#);
                    let r = self
                        .conn
                        .request(Method::POST, "/cart/items", Some(Bytes::from(body)))
                        .await;
                    (OpKind::AddToCart, r)
                } else {
                    (
                        OpKind::Me,
                        self.conn.request(Method::GET, "/me", None).await,
                    )
                };
                let mut res = simple(kind, r.as_ref().map_err(|f| *f), started, None);
                if let Ok(answer) = &r {
                    let answered = if kind == OpKind::Me && (200..300).contains(&answer.status) {
                        serde_json::from_slice::<app::Me>(&answer.body)
                            .ok()
                            .map(|b| b.user)
                    } else {
                        None
                    };
                    let added = kind == OpKind::AddToCart && (200..300).contains(&answer.status);
                    if added
                        && serde_json::from_slice::<app::Cart>(&answer.body)
                            .is_ok_and(|c| c.cart.len() >= FULL_ENOUGH)
                    {
                        *logged_in = false;
                    }
                    let verdict = if added {
                        SessionVerdict::Known
                    } else {
                        checkers::judge_session(answer.status, &self.name, answered.as_deref())
                    };
                    if verdict == SessionVerdict::Lost {
                        res.session_loss = true;
                        res.outcome = Outcome::Fail;
                        *logged_in = false;
                    }
                }
                res
            }
            Role::Bank {
                account,
                ledger,
                deposit_next,
            } => {
                if *deposit_next {
                    *deposit_next = false;
                    lock(ledger).sending(DEPOSIT_CENTS);
                    let path = format!("/accounts/{account}/deposit");
                    let body = serde_json::to_string(&app::Deposit {
                        amount: DEPOSIT_CENTS,
                    })
                    .expect("a deposit serialises");
                    let r = self
                        .conn
                        .request(Method::POST, &path, Some(Bytes::from(body)))
                        .await;
                    let mut res = simple(
                        OpKind::Deposit,
                        r.as_ref().map_err(|f| *f),
                        started,
                        Some(DEPOSIT_CENTS),
                    );
                    let write = match (&r, res.class) {
                        (Ok(_), Class::Ok) => WriteOutcome::Acknowledged,
                        (Err(Failure::Connect), _) | (Ok(_), Class::Http4xx) => {
                            WriteOutcome::Failed
                        }
                        _ => WriteOutcome::Unknown,
                    };
                    lock(ledger).settle(write);
                    res.outcome = match write {
                        WriteOutcome::Acknowledged => Outcome::Ok,
                        WriteOutcome::Failed => Outcome::Fail,
                        WriteOutcome::Unknown => Outcome::Unknown,
                    };
                    res
                } else {
                    *deposit_next = true;
                    let path = format!("/accounts/{account}");
                    let r = self.conn.request(Method::GET, &path, None).await;
                    let mut res =
                        simple(OpKind::Balance, r.as_ref().map_err(|f| *f), started, None);
                    if let Ok(answer) = &r {
                        if let Some(balance) = read_balance(answer) {
                            res.class = Class::Ok;
                            res.outcome = Outcome::Ok;
                            res.value = Some(balance);
                            res.stale_read = lock(ledger).is_stale(balance);
                        } else if res.class == Class::Ok {
                            // A 2xx without a balance: an answer we cannot use.
                            res.class = Class::Other;
                            res.outcome = Outcome::Fail;
                        }
                    }
                    res
                }
            }
        }
    }
}

impl User {
    /// `GET /work?ms=N`; the history's value is N, so cheap and heavy
    /// requests can be told apart afterwards.
    async fn work(&mut self, ms: u32, started: Instant) -> OpResult {
        let path = format!("/work?ms={ms}");
        let r = self.conn.request(Method::GET, &path, None).await;
        simple(
            OpKind::Work,
            r.as_ref().map_err(|f| *f),
            started,
            Some(i64::from(ms)),
        )
    }

    /// `GET /products/ID`: most reads (80% unless --hot-share says
    /// otherwise) hit the 20 hot products.
    async fn product(&mut self, hot_share: f64, ms: u32, started: Instant) -> OpResult {
        // Most reads (80% unless --hot-share says otherwise) hit the hot products.
        let id: i64 = if self.rng.random_bool(hot_share) {
            self.rng.random_range(1..=HOT_PRODUCTS)
        } else {
            self.rng.random_range(1..=CATALOGUE)
        };
        let path = if ms > 0 {
            format!("/products/{id}?ms={ms}")
        } else {
            format!("/products/{id}")
        };
        let r = self.conn.request(Method::GET, &path, None).await;
        let mut res = simple(
            OpKind::Product,
            r.as_ref().map_err(|f| *f),
            started,
            Some(id),
        );
        if let Ok(answer) = &r {
            if res.class == Class::Ok {
                res.cache_hit = serde_json::from_slice::<app::Product>(&answer.body)
                    .ok()
                    .map(|b| b.source == app::Source::Cache);
            }
        }
        res
    }
}

/// The balance in an answer: a 404 means the account does not exist there
/// (yet), which is a balance of 0.
fn read_balance(answer: &Answer) -> Option<i64> {
    match answer.status {
        404 => Some(0),
        200..=299 => serde_json::from_slice::<app::Balance>(&answer.body)
            .ok()
            .map(|b| b.balance),
        _ => None,
    }
}

fn simple(
    kind: OpKind,
    r: Result<&Answer, Failure>,
    started: Instant,
    value: Option<i64>,
) -> OpResult {
    let latency = started.elapsed();
    match r {
        Ok(a) => {
            let class = class_of(a.status);
            OpResult {
                kind,
                class,
                outcome: if class == Class::Ok {
                    Outcome::Ok
                } else {
                    Outcome::Fail
                },
                status: Some(a.status),
                failure: None,
                served_by: a.served_by.clone(),
                latency,
                value,
                session_loss: false,
                stale_read: false,
                cache_hit: None,
            }
        }
        Err(f) => OpResult {
            kind,
            class: failure_class(f),
            outcome: Outcome::Fail,
            status: None,
            failure: Some(f),
            served_by: None,
            latency,
            value,
            session_loss: false,
            stale_read: false,
            cache_hit: None,
        },
    }
}

/// Reads one account's balance on the primary for the final audit, retrying a
/// few times: a failover may still be settling when the run ends.
pub async fn read_primary_balance(
    target: Arc<Target>,
    timeout: Duration,
    account: u64,
) -> (Option<i64>, OpResult) {
    let mut conn = Conn::new(target, timeout);
    let path = format!("/accounts/{account}?consistency=primary");
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let started = Instant::now();
        let r = conn.request(Method::GET, &path, None).await;
        let mut res = simple(OpKind::Audit, r.as_ref().map_err(|f| *f), started, None);
        if let Ok(answer) = &r {
            if let Some(balance) = read_balance(answer) {
                res.class = Class::Ok;
                res.outcome = Outcome::Ok;
                res.value = Some(balance);
                return (Some(balance), res);
            }
        }
        last = Some(res);
    }
    let res =
        last.unwrap_or_else(|| simple(OpKind::Audit, Err(Failure::Connect), Instant::now(), None));
    (None, res)
}
