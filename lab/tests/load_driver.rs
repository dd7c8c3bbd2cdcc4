//! The load driver against an in-process imitation of the lab: three fake
//! "servers" behind one port, sessions that can be wiped, a bank whose replica
//! lags on demand, and windows of 502s or stalls on a clock the test controls.
//! Everything listens on 127.0.0.1 and every run is a few seconds long.

use lab_contract::app::{Balance, Product, Source};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lab::load::{self, LiveView, LoadPlan, Report, Scenario};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SERVERS: u64 = 3;

/// The fake lab. Tests flip its switches while the driver runs.
#[derive(Default)]
struct Fake {
    t0: Mutex<Option<Instant>>,
    next: AtomicU64,
    /// Sticky routing by the `lab_server` cookie, like the balancer's sticky
    /// strategy (and sessions in each server's memory).
    sticky: AtomicBool,
    /// Session token -> (server that holds it, user).
    sessions: Mutex<HashMap<String, (u64, String)>>,
    /// Sessions shared by every server (like Redis) unless sticky.
    logins: AtomicU64,
    /// Bank: account -> deposits (amount, visible on the replica from).
    accounts: Mutex<HashMap<u64, Vec<(i64, Instant)>>>,
    replica_lag_ms: AtomicU64,
    /// Acknowledge but do not store this many deposits.
    lose_deposits: AtomicU64,
    /// Store, then answer 504, for this many deposits.
    deposits_504_applied: AtomicU64,
    /// Answer 502 between these offsets (ms) from t0.
    fail_window: Mutex<Option<(u64, u64)>>,
    /// Hold every request arriving between these offsets until the end.
    stall_window: Mutex<Option<(u64, u64)>>,
    /// Lines in every cart the fake answers with (1 when 0).
    cart_lines: AtomicU64,
    /// Every product read takes this long (a loaded database).
    product_delay_ms: AtomicU64,
}

impl Fake {
    fn since_t0(&self) -> Duration {
        let t0 = *self.t0.lock().unwrap_or_else(|e| e.into_inner());
        t0.map(|t| t.elapsed()).unwrap_or_default()
    }

    fn start_clock(&self) {
        *self.t0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn in_window(&self, w: &Mutex<Option<(u64, u64)>>) -> Option<Duration> {
        let w = *w.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.since_t0().as_millis() as u64;
        match w {
            Some((from, to)) if now >= from && now < to => Some(Duration::from_millis(to - now)),
            _ => None,
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

type St = State<Arc<Fake>>;

/// Picks the "server" and applies the fault windows; `None` means the
/// request was failed with a 502 already.
async fn route(fake: &Fake, headers: &HeaderMap) -> Result<u64, Response> {
    if let Some(rest) = fake.in_window(&fake.stall_window) {
        tokio::time::sleep(rest).await;
    }
    if fake.in_window(&fake.fail_window).is_some() {
        return Err((
            StatusCode::BAD_GATEWAY,
            [("x-served-by", "lb-1")],
            Json(json!({"error": "no server answered"})),
        )
            .into_response());
    }
    if fake.sticky.load(Ordering::SeqCst) {
        if let Some(s) =
            cookie(headers, "lab_server").and_then(|s| s.strip_prefix("server-")?.parse().ok())
        {
            return Ok(s);
        }
    }
    Ok(fake.next.fetch_add(1, Ordering::SeqCst) % SERVERS + 1)
}

fn answer(server: u64, status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("server-{server}")) {
        r.headers_mut().insert("x-served-by", v);
    }
    r
}

async fn root(State(f): St, h: HeaderMap) -> Response {
    match route(&f, &h).await {
        Ok(s) => answer(s, StatusCode::OK, json!({"server": format!("server-{s}")})),
        Err(r) => r,
    }
}

async fn login(State(f): St, h: HeaderMap, Json(body): Json<Value>) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let user = body["user"].as_str().unwrap_or("").to_string();
    let n = f.logins.fetch_add(1, Ordering::SeqCst);
    let token = format!("tok{n}");
    f.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token.clone(), (s, user.clone()));
    let mut r = answer(
        s,
        StatusCode::OK,
        json!({"user": user, "server": format!("server-{s}")}),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("lab_session={token}; Path=/; HttpOnly")) {
        r.headers_mut().append("set-cookie", v);
    }
    if f.sticky.load(Ordering::SeqCst) {
        if let Ok(v) = HeaderValue::from_str(&format!("lab_server=server-{s}; Path=/")) {
            r.headers_mut().append("set-cookie", v);
        }
    }
    r
}

fn session_user(f: &Fake, h: &HeaderMap, server: u64) -> Option<String> {
    let token = cookie(h, "lab_session")?;
    let sessions = f.sessions.lock().unwrap_or_else(|e| e.into_inner());
    let (holder, user) = sessions.get(&token)?;
    // With sticky routing, sessions live in one server's memory.
    if f.sticky.load(Ordering::SeqCst) && *holder != server {
        return None;
    }
    Some(user.clone())
}

async fn me(State(f): St, h: HeaderMap) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match session_user(&f, &h, s) {
        Some(user) => answer(
            s,
            StatusCode::OK,
            json!({"user": user, "cart": [], "server": format!("server-{s}")}),
        ),
        None => answer(
            s,
            StatusCode::UNAUTHORIZED,
            json!({"error": "not logged in"}),
        ),
    }
}

async fn cart(State(f): St, h: HeaderMap, Json(_): Json<Value>) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match session_user(&f, &h, s) {
        Some(_) => {
            let n = f.cart_lines.load(Ordering::SeqCst).max(1);
            let cart: Vec<Value> = (1..=n)
                .map(|id| json!({"product_id": id, "quantity": 1}))
                .collect();
            answer(s, StatusCode::OK, json!({ "cart": cart }))
        }
        None => answer(
            s,
            StatusCode::UNAUTHORIZED,
            json!({"error": "not logged in"}),
        ),
    }
}

async fn product(State(f): St, h: HeaderMap, Path(id): Path<u64>) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let delay = f.product_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let source = if id <= 20 { Source::Cache } else { Source::Db };
    let body = Product {
        id: id as i64,
        name: "thing".into(),
        price_cents: 100,
        sales_rank: Some(id as i64),
        units_sold: 1,
        source,
        server: format!("server-{s}"),
    };
    answer(s, StatusCode::OK, json!(body))
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn deposit(
    State(f): St,
    h: HeaderMap,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let amount = body["amount"].as_i64().unwrap_or(0);
    let lag = Duration::from_millis(f.replica_lag_ms.load(Ordering::SeqCst));
    let mut accounts = f.accounts.lock().unwrap_or_else(|e| e.into_inner());
    let entry = accounts.entry(id).or_default();
    if take_one(&f.lose_deposits) {
        // Acknowledged, never stored: what an unsafe failover does.
        let balance: i64 = entry.iter().map(|(a, _)| a).sum::<i64>() + amount;
        return answer(s, StatusCode::OK, balance_body(s, id, balance, "db-1"));
    }
    entry.push((amount, Instant::now() + lag));
    let balance: i64 = entry.iter().map(|(a, _)| a).sum();
    if take_one(&f.deposits_504_applied) {
        return answer(
            s,
            StatusCode::GATEWAY_TIMEOUT,
            json!({"error": "primary did not confirm"}),
        );
    }
    answer(s, StatusCode::OK, balance_body(s, id, balance, "db-1"))
}

/// A balance as the app answers it (the contract's type).
fn balance_body(server: u64, id: u64, balance: i64, db: &str) -> Value {
    json!(Balance {
        account: id as i64,
        balance,
        db: db.into(),
        server: format!("server-{server}"),
    })
}

async fn balance(
    State(f): St,
    h: HeaderMap,
    Path(id): Path<u64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let primary = q.get("consistency").map(String::as_str) == Some("primary");
    let accounts = f.accounts.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let visible: Vec<i64> = accounts
        .get(&id)
        .map(|d| {
            d.iter()
                .filter(|(_, at)| primary || *at <= now)
                .map(|(a, _)| *a)
                .collect()
        })
        .unwrap_or_default();
    if visible.is_empty() {
        return answer(
            s,
            StatusCode::NOT_FOUND,
            json!({"error": "no such account"}),
        );
    }
    let db = if primary { "db-1" } else { "db-2" };
    answer(
        s,
        StatusCode::OK,
        balance_body(s, id, visible.iter().sum::<i64>(), db),
    )
}

/// `GET /work?ms=N`: answers at once (the fake burns nothing), echoing N.
async fn work(State(f): St, h: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = match route(&f, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
    answer(s, StatusCode::OK, json!({"ms": ms}))
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/", get(root))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/cart/items", post(cart))
        .route("/products/{id}", get(product))
        .route("/work", get(work))
        .route("/accounts/{id}/deposit", post(deposit))
        .route("/accounts/{id}", get(balance))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, format!("http://{addr}"))
}

fn args(scenario: Scenario, secs: f64) -> LoadPlan {
    LoadPlan {
        scenario,
        duration: Duration::from_secs_f64(secs),
        timeout: Duration::from_secs(2),
        live: LiveView::Off,
        ..LoadPlan::default()
    }
}

async fn drive(fake: &Fake, url: &str, a: &LoadPlan) -> Report {
    fake.start_clock();
    load::run_until(a, url, CancellationToken::new())
        .await
        .expect("load run")
}

/// Totals, timeline and per-server counts agree with one another.
fn assert_consistent(r: &Report) {
    let e = &r.errors;
    assert_eq!(
        r.requests,
        r.ok + e.connect + e.timeout + e.http_5xx + e.http_4xx + e.other,
        "requests = ok + errors: {r:#?}"
    );
    let tl_requests: u64 = r.timeline.iter().map(|s| s.requests).sum();
    let tl_ok: u64 = r.timeline.iter().map(|s| s.ok).sum();
    let tl_errors: u64 = r.timeline.iter().map(|s| s.errors).sum();
    assert_eq!(tl_requests, r.requests, "timeline requests");
    assert_eq!(tl_ok, r.ok, "timeline ok");
    assert_eq!(tl_errors, r.requests - r.ok, "timeline errors");
    let tl_losses: u64 = r.timeline.iter().map(|s| s.session_losses).sum();
    let tl_stale: u64 = r.timeline.iter().map(|s| s.stale_reads).sum();
    assert_eq!(tl_losses, r.session_losses);
    assert_eq!(tl_stale, r.stale_reads);
    for (i, s) in r.timeline.iter().enumerate() {
        assert_eq!(s.t, i as u64 + 1, "timeline seconds are consecutive from 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_add_up_and_match_the_history() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("ops.jsonl");
    let mut a = args(Scenario::Mixed, 2.0);
    a.users = Some(6);
    a.history = Some(history.clone());
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    assert!(r.requests > 50, "{r:#?}");
    assert_eq!(r.ok, r.requests, "a healthy fake gives no errors: {r:#?}");
    let answered: u64 = r.per_server.values().sum();
    assert_eq!(answered, r.requests);
    assert_eq!(r.per_server.len(), 3);
    assert_eq!((r.session_losses, r.stale_reads, r.lost_writes), (0, 0, 0));
    let cache = r.cache.clone().expect("browse users read products");
    assert!(
        cache.hits > cache.misses,
        "the hot set comes from the cache: {cache:?}"
    );
    let audit = r.audit.clone().expect("bank users were audited");
    assert_eq!(audit.accounts, 2, "users 2 and 5 bank");
    assert_eq!(audit.audited, 2);
    assert_eq!(audit.missing_cents, 0);

    let text = std::fs::read_to_string(&history).expect("history written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let ops = lines.iter().filter(|l| l["kind"] != "audit").count() as u64;
    assert_eq!(ops, r.requests, "one history line per request");
    assert_eq!(
        lines.len() as u64,
        r.requests + 2,
        "plus one audit line per account"
    );
    assert_eq!(
        r.history.as_ref().map(|h| h.lines),
        Some(lines.len() as u64)
    );
    let deposit = lines
        .iter()
        .find(|l| l["kind"] == "deposit")
        .expect("a deposit");
    for key in [
        "t_ms",
        "user",
        "value",
        "outcome",
        "status",
        "server",
        "latency_ms",
        "account",
    ] {
        assert!(
            deposit.get(key).is_some(),
            "history line lacks {key}: {deposit}"
        );
    }
    assert_eq!(deposit["outcome"], "ok");
    assert_eq!(deposit["value"], 50);

    let j = r.to_json();
    for key in [
        "scenario",
        "duration_s",
        "requests",
        "ok",
        "rps",
        "errors",
        "latency_ms",
        "per_server",
        "session_losses",
        "stale_reads",
        "lost_writes",
        "timeline",
        "unknown_writes",
    ] {
        assert!(j.get(key).is_some(), "--json lacks {key}");
    }
    assert!(j["timeline"][0].get("t").is_some());
}

/// The history's lines, parsed.
fn history_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("history written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_mixes_heavy_requests_in_at_the_asked_share() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("ops.jsonl");
    let mut a = args(Scenario::Work, 30.0);
    a.users = Some(4);
    a.requests = Some(2000);
    a.work_ms = 2;
    a.heavy_ms = 90;
    a.heavy_share = Some(0.25);
    a.history = Some(history.clone());
    let r = drive(&fake, &url, &a).await;
    assert_eq!(r.ok, 2000, "{r:#?}");
    let lines = history_lines(&history);
    let heavy = lines.iter().filter(|l| l["value"] == 90).count();
    let cheap = lines.iter().filter(|l| l["value"] == 2).count();
    assert_eq!(heavy + cheap, 2000, "every request is cheap or heavy");
    // 500 expected; 5 standard deviations (19 each) either side.
    assert!((400..=600).contains(&heavy), "{heavy} heavy of 2000");
    assert!(lines.iter().all(|l| l["kind"] == "work"));

    // Without --heavy-share every request costs --work-ms.
    a.heavy_share = None;
    a.requests = Some(200);
    let r = drive(&fake, &url, &a).await;
    assert_eq!(r.ok, 200);
    assert!(history_lines(&history).iter().all(|l| l["value"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_server_work_then_a_product_read() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("ops.jsonl");
    let mut a = args(Scenario::Render, 30.0);
    a.users = Some(3);
    a.requests = Some(300);
    a.work_ms = 7;
    a.history = Some(history.clone());
    let r = drive(&fake, &url, &a).await;
    assert_eq!(r.ok, 300, "{r:#?}");
    let lines = history_lines(&history);
    for user in 0..3 {
        let kinds: Vec<&str> = lines
            .iter()
            .filter(|l| l["user"] == user)
            .filter_map(|l| l["kind"].as_str())
            .collect();
        assert!(kinds.len() > 10, "user {user}: {kinds:?}");
        for (i, k) in kinds.iter().enumerate() {
            let want = if i % 2 == 0 { "work" } else { "product" };
            assert_eq!(*k, want, "user {user}, request {i}: {kinds:?}");
        }
    }
    assert!(lines
        .iter()
        .filter(|l| l["kind"] == "work")
        .all(|l| l["value"] == 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_sessions_are_counted_once_per_user_and_users_recover() {
    let (fake, url) = start_fake().await;
    let mut a = args(Scenario::Sessions, 3.0);
    a.users = Some(4);
    let wiper = {
        let fake = Arc::clone(&fake);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // Like a Redis flush, or the one server that held them restarting.
            fake.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        })
    };
    let r = drive(&fake, &url, &a).await;
    wiper.await.expect("wiper");
    assert_consistent(&r);
    assert_eq!(
        r.session_losses, 4,
        "each logged-in user notices once: {r:#?}"
    );
    assert_eq!(
        fake.logins.load(Ordering::SeqCst),
        8,
        "each user logged in again"
    );
    let last = r
        .timeline
        .iter()
        .rev()
        .find(|s| s.requests > 0)
        .expect("a last second");
    assert!(
        last.ok > 0 && last.session_losses == 0,
        "users went on after logging in again: {last:?}"
    );
    let window: Vec<u64> = r
        .timeline
        .iter()
        .filter(|s| s.session_losses > 0)
        .map(|s| s.t)
        .collect();
    assert_eq!(
        window,
        vec![2],
        "the losses happen in the second of the wipe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_ends_before_the_cart_is_full() {
    // A cart near the app's limit ends the visit: the user logs in afresh
    // (an empty cart) instead of adding until the app answers 409.
    for (lines, logins) in [(1, 1), (lab_contract::app::MAX_CART_LINES as u64, 6)] {
        let (fake, url) = start_fake().await;
        fake.cart_lines.store(lines, Ordering::SeqCst);
        let mut a = args(Scenario::Sessions, 30.0);
        a.users = Some(1);
        // A login, then every fifth request adds to the cart: 5 visits of
        // a login and 5 requests, and a last login.
        a.requests = Some(31);
        let r = drive(&fake, &url, &a).await;
        assert_eq!((r.requests, r.ok), (31, 31));
        assert_eq!(
            fake.logins.load(Ordering::SeqCst),
            logins,
            "a cart of {lines} lines"
        );
        assert_eq!(r.session_losses, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_need_every_cookie_kept() {
    let (fake, url) = start_fake().await;
    fake.sticky.store(true, Ordering::SeqCst);
    let mut a = args(Scenario::Sessions, 1.5);
    a.users = Some(3);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    // Memory sessions on three servers: only the sticky cookie sent back with
    // the session cookie keeps each user on the server that knows it.
    assert_eq!(r.session_losses, 0, "{r:#?}");
    assert_eq!(r.ok, r.requests);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gives_stale_reads_and_no_lost_writes() {
    let (fake, url) = start_fake().await;
    fake.replica_lag_ms.store(300, Ordering::SeqCst);
    let mut a = args(Scenario::Bank, 2.0);
    a.users = Some(3);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    assert!(r.stale_reads > 0, "{r:#?}");
    // Each user reads after every deposit: with a 300 ms lag nearly every
    // read is stale, and none is an error (a 404 counts as balance 0).
    assert_eq!(r.ok, r.requests);
    assert_eq!(r.lost_writes, 0);
    let audit = r.audit.clone().expect("audit");
    assert_eq!((audit.audited, audit.missing_cents), (3, 0), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_replicas_give_no_stale_reads() {
    let (fake, url) = start_fake().await;
    let mut a = args(Scenario::Bank, 1.5);
    a.users = Some(3);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    assert_eq!(
        (r.stale_reads, r.lost_writes, r.unknown_writes),
        (0, 0, 0),
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_lost_writes() {
    let (fake, url) = start_fake().await;
    fake.lose_deposits.store(3, Ordering::SeqCst);
    let mut a = args(Scenario::Bank, 1.5);
    a.users = Some(2);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    assert_eq!(r.lost_writes, 3, "{r:#?}");
    assert_eq!(r.unknown_writes, 0);
    let audit = r.audit.clone().expect("audit");
    assert_eq!(audit.missing_cents, 150);
    assert!((1..=2).contains(&audit.short_accounts), "{audit:?}");
    // Reads after a lost deposit show less than acknowledged: stale too.
    assert!(r.stale_reads > 0);
    assert!(r.render_text().contains("lost writes 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_of_unknown_outcome_are_not_lost_writes() {
    let (fake, url) = start_fake().await;
    fake.deposits_504_applied.store(2, Ordering::SeqCst);
    let mut a = args(Scenario::Bank, 1.5);
    a.users = Some(2);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    assert_eq!(r.unknown_writes, 2, "two deposits answered 504: {r:#?}");
    assert_eq!(r.errors.http_5xx, 2);
    assert_eq!(r.lost_writes, 0);
    let audit = r.audit.clone().expect("audit");
    assert_eq!(audit.missing_cents, 0);
    // The 504 deposits did land: explained, not suspicious.
    assert_eq!(audit.unknown_applied_cents, 100);
    assert_eq!(audit.unexplained_cents, 0);
    assert_eq!(r.stale_reads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_a_window_of_502s() {
    let (fake, url) = start_fake().await;
    *fake.fail_window.lock().unwrap_or_else(|e| e.into_inner()) = Some((2000, 3000));
    let mut a = args(Scenario::Browse, 5.0);
    a.users = Some(4);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    let by_t = |t: u64| {
        r.timeline
            .iter()
            .find(|s| s.t == t)
            .cloned()
            .expect("second present")
    };
    assert_eq!(by_t(1).errors, 0);
    assert_eq!(by_t(5).errors, 0);
    let third = by_t(3);
    assert!(
        third.requests > 0 && third.errors * 10 >= third.requests * 9,
        "{third:?}"
    );
    assert_eq!(third.errors_by_kind.http_5xx, third.errors);
    assert!(
        matches!(r.first_failure_s, Some(2 | 3)),
        "{:?}",
        r.first_failure_s
    );
    assert!(
        matches!(r.last_failure_s, Some(3 | 4)),
        "{:?}",
        r.last_failure_s
    );
    assert_eq!(r.errors.http_5xx, r.requests - r.ok);
    assert!(
        r.per_server.contains_key("lb-1"),
        "the balancer's own answers are attributed to it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_counts_a_stall_from_the_scheduled_time() {
    let (fake, url) = start_fake().await;
    *fake.stall_window.lock().unwrap_or_else(|e| e.into_inner()) = Some((1000, 2000));
    let mut a = args(Scenario::Ping, 3.0);
    a.rate = Some(100.0);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    let b = r
        .behind_schedule
        .clone()
        .expect("open model reports its schedule");
    assert_eq!(b.scheduled, 300);
    assert_eq!(b.started, 300, "no request is skipped: {b:?}");
    assert_eq!(b.not_started, 0);
    assert_eq!(r.requests, 300);
    assert_eq!(r.ok, 300);
    // A third of the requests were due during the one-second stall: the
    // first of them waited about a second, and the p99 says so.
    assert!(r.latency_ms.max >= 900.0, "{:?}", r.latency_ms);
    assert!(r.latency_ms.p99 >= 800.0, "{:?}", r.latency_ms);
    assert!(r.latency_ms.p90 >= 300.0, "{:?}", r.latency_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_keeps_the_mix_when_one_part_is_slow() {
    // Product pages take 300 ms, everything else a moment: users of the
    // quick parts come back first, but a third of the requests must still
    // be product pages, or a capacity measured under load would be the
    // capacity of an easier mix.
    let (fake, url) = start_fake().await;
    fake.product_delay_ms.store(300, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("h.jsonl");
    let mut a = args(Scenario::Mixed, 3.0);
    a.rate = Some(200.0);
    a.history = Some(history.clone());
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    let lines = history_lines(&history);
    let of = |kinds: &[&str]| {
        lines
            .iter()
            .filter(|l| kinds.contains(&l["kind"].as_str().unwrap_or_default()))
            .count() as f64
            / lines.len() as f64
    };
    let pages = of(&["product"]);
    let sessions = of(&["login", "me", "cart_add"]);
    let bank = of(&["deposit", "balance"]);
    assert!(lines.len() >= 580, "{} requests", lines.len());
    // Each request draws its part: a third each, within 2.5 standard
    // deviations of 600 draws.
    for (part, share) in [("pages", pages), ("sessions", sessions), ("bank", bank)] {
        assert!(
            (0.28..=0.39).contains(&share),
            "{part}: {share:.3} of {} requests",
            lines.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_says_when_it_falls_behind() {
    let (fake, url) = start_fake().await;
    *fake.stall_window.lock().unwrap_or_else(|e| e.into_inner()) = Some((1000, 2000));
    let mut a = args(Scenario::Ping, 3.0);
    a.rate = Some(100.0);
    // Only 5 connections: during the stall they are all stuck, so the
    // requests due meanwhile start late; they are still sent, and their
    // latency still counts from when they were due.
    a.max_in_flight = 5;
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    let b = r.behind_schedule.clone().expect("schedule");
    assert!(b.late >= 80, "{b:?}");
    assert!(b.max_lag_ms >= 800.0, "{b:?}");
    assert_eq!(b.started, 300);
    assert_eq!(r.requests, 300);
    assert!(r.latency_ms.p99 >= 800.0, "{:?}", r.latency_ms);
    assert!(r.render_text().contains("behind schedule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_means_connect_errors_and_a_run_that_still_ends() {
    // Bind then drop a listener: the port is (almost certainly) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut a = args(Scenario::Bank, 1.0);
    a.users = Some(2);
    let t = Instant::now();
    let r = load::run_until(&a, &url, CancellationToken::new())
        .await
        .expect("run");
    assert!(t.elapsed() < Duration::from_secs(15), "bounded");
    assert_consistent(&r);
    assert!(r.requests > 0);
    assert_eq!(r.errors.connect, r.requests);
    // Connection refused: the deposits were certainly not made.
    assert_eq!((r.unknown_writes, r.lost_writes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_their_own_kind_of_error() {
    let (fake, url) = start_fake().await;
    *fake.stall_window.lock().unwrap_or_else(|e| e.into_inner()) = Some((0, 5000));
    let mut a = args(Scenario::Bank, 1.0);
    a.users = Some(2);
    a.timeout = Duration::from_millis(300);
    let r = drive(&fake, &url, &a).await;
    assert_consistent(&r);
    assert!(r.errors.timeout > 0);
    assert_eq!(r.errors.timeout, r.requests);
    // A deposit that timed out may have happened: unknown, never lost.
    assert!(r.unknown_writes > 0);
    assert_eq!(r.lost_writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_stop_at_a_request_budget_or_when_cancelled() {
    let (fake, url) = start_fake().await;
    let mut a = args(Scenario::Ping, 30.0);
    a.users = Some(4);
    a.requests = Some(50);
    let r = drive(&fake, &url, &a).await;
    assert_eq!(r.requests, 50);

    let a = args(Scenario::Browse, 30.0);
    let cancel = CancellationToken::new();
    let stopper = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            cancel.cancel();
        })
    };
    let t = Instant::now();
    let r = load::run_until(&a, &url, cancel).await.expect("run");
    stopper.await.expect("stopper");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "Ctrl-C ends the run at once"
    );
    assert!(r.interrupted);
    assert!(r.duration_s < 2.0);
    assert!(r.requests > 0, "the report of what ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_targets_are_refused_before_any_load() {
    let bad = [
        LoadPlan {
            rate: Some(0.0),
            ..LoadPlan::default()
        },
        LoadPlan {
            duration: Duration::from_secs(4000),
            ..LoadPlan::default()
        },
        LoadPlan {
            target: Some("http://10.1.2.3:8080".into()),
            ..LoadPlan::default()
        },
    ];
    for a in bad {
        let e = load::run_until(&a, "http://127.0.0.1:1", CancellationToken::new())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains('\n'), "one line: {e}");
    }
    let e = load::run_until(
        &args(Scenario::Ping, 1.0),
        "http://example.com",
        CancellationToken::new(),
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("only sends traffic to this machine"), "{e}");
}

/// `run_watched` hands a caller (the web dashboard) the very seconds the
/// live view draws: one per second, in order, and they add up to the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_gets_each_second_the_live_view_gets() {
    let (fake, url) = start_fake().await;
    let mut a = args(Scenario::Browse, 3.0);
    a.users = Some(4);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    fake.start_clock();
    let r = load::run_watched(&a, &url, CancellationToken::new(), Some(tx))
        .await
        .expect("load run");
    let mut seen = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seen.push(s);
    }
    assert!(
        (2..=3).contains(&seen.len()),
        "{} seconds seen in a 3 s run",
        seen.len()
    );
    for (i, s) in seen.iter().enumerate() {
        let last = s.last.as_ref().expect("a second that ended");
        assert_eq!(last.t, i as u64 + 1);
        assert_eq!(s.elapsed, Duration::from_secs(i as u64 + 1));
    }
    let counted: u64 = seen
        .iter()
        .filter_map(|s| s.last.as_ref())
        .map(|l| l.counts.requests)
        .sum();
    let timeline: u64 = r.timeline.iter().take(seen.len()).map(|s| s.requests).sum();
    assert_eq!(counted, timeline);
    assert!(counted > 0, "{r:#?}");
}
