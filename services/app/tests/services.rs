//! Integration tests against real Redis and real PostgreSQL (a primary and a
//! streaming replica), started by the fixture in `common/`. Each test builds
//! exactly the services it needs and tears them down at the end.
//!
//! They show, with real parts, the behaviours the lessons rely on: where
//! sessions live, what a cache saves, what a replica's lag looks like, what a
//! dead dependency looks like, and that concurrent start-ups migrate safely.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn dead_db() -> String {
    // Nothing listens there; a test that never touches the database.
    format!("postgres://lab@127.0.0.1:{}/lab", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sessions_are_unknown_to_a_second_server() {
    let db = dead_db();
    let one = TestApp::start(&[("SERVER_NAME", "server-1"), ("DATABASE_URL", &db)]).await;
    let two = TestApp::start(&[("SERVER_NAME", "server-2"), ("DATABASE_URL", &db)]).await;
    let http = client();

    let login = post(&http, &one.url("/login"), r#"{"user":"alice"}"#, None).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.json, json!({"user": "alice", "server": "server-1"}));
    let cookie = login.cookie.expect("session cookie");

    let me = get(&http, &one.url("/me"), Some(&cookie)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json["user"], "alice");

    // The same cookie, the next request balanced to another server.
    let me = get(&http, &two.url("/me"), Some(&cookie)).await;
    assert_eq!(me.status, 401);
    assert_eq!(me.json, json!({"error": "not logged in"}));
    assert_eq!(me.served_by, "server-2");
}

async fn shared_sessions_follow_the_user(one: &TestApp, two: &TestApp) {
    let http = client();
    let login = post(&http, &one.url("/login"), r#"{"user":"bob"}"#, None).await;
    assert_eq!(login.status, 200, "{}", login.text);
    let cookie = login.cookie.expect("session cookie");

    let me = get(&http, &two.url("/me"), Some(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        me.json,
        json!({"user": "bob", "cart": [], "server": "server-2"})
    );

    let cart = post(
        &http,
        &two.url("/cart/items"),
        r#"{"product_id":3,"quantity":2}"#,
        Some(&cookie),
    )
    .await;
    assert_eq!(
        cart.json,
        json!({"cart": [{"product_id": 3, "quantity": 2}]})
    );
    // jwt re-issues the cookie with the new cart; redis keeps the same one.
    let cookie = cart.cookie.unwrap_or(cookie);

    let me = get(&http, &one.url("/me"), Some(&cookie)).await;
    assert_eq!(me.json["cart"], json!([{"product_id": 3, "quantity": 2}]));
    assert_eq!(me.served_by, "server-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_are_known_to_every_server() {
    if !services_available() {
        return;
    }
    let redis = RedisServer::start();
    let db = dead_db();
    let url = redis.url();
    let vars = |name: &'static str| {
        [
            ("SERVER_NAME", name),
            ("DATABASE_URL", db.as_str()),
            ("SESSION_STORE", "redis"),
            ("REDIS_URL", url.as_str()),
            ("SESSION_SECRET", SECRET),
        ]
    };
    let one = TestApp::start(&vars("server-1")).await;
    let two = TestApp::start(&vars("server-2")).await;
    shared_sessions_follow_the_user(&one, &two).await;

    // Logging out on one server ends the session everywhere.
    let http = client();
    let login = post(&http, &one.url("/login"), r#"{"user":"erin"}"#, None).await;
    let cookie = login.cookie.unwrap();
    assert_eq!(
        post(&http, &two.url("/logout"), "{}", Some(&cookie))
            .await
            .status,
        200
    );
    assert_eq!(get(&http, &one.url("/me"), Some(&cookie)).await.status, 401);
    assert_eq!(one.metric("sessions_created_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_sessions_are_known_to_every_server() {
    let db = dead_db();
    let vars = |name: &'static str| {
        [
            ("SERVER_NAME", name),
            ("DATABASE_URL", db.as_str()),
            ("SESSION_STORE", "jwt"),
            ("SESSION_SECRET", SECRET),
        ]
    };
    let one = TestApp::start(&vars("server-1")).await;
    let two = TestApp::start(&vars("server-2")).await;
    shared_sessions_follow_the_user(&one, &two).await;

    // A server with another secret can't read the token.
    let other = TestApp::start(&[
        ("SERVER_NAME", "server-3"),
        ("DATABASE_URL", db.as_str()),
        ("SESSION_STORE", "jwt"),
        ("SESSION_SECRET", "a completely different secret, 32+ bytes"),
    ])
    .await;
    let http = client();
    let cookie = post(&http, &one.url("/login"), r#"{"user":"frank"}"#, None)
        .await
        .cookie
        .unwrap();
    assert_eq!(
        get(&http, &other.url("/me"), Some(&cookie)).await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_named_503_and_the_server_recovers() {
    if !services_available() {
        return;
    }
    let mut redis = RedisServer::start();
    let db = dead_db();
    let url = redis.url();
    let app = TestApp::start(&[
        ("DATABASE_URL", db.as_str()),
        ("SESSION_STORE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("SESSION_SECRET", SECRET),
    ])
    .await;
    let http = client();
    let cookie = post(&http, &app.url("/login"), r#"{"user":"gina"}"#, None)
        .await
        .cookie
        .unwrap();
    assert_eq!(get(&http, &app.url("/me"), Some(&cookie)).await.status, 200);

    redis.kill();
    let start = Instant::now();
    let me = get(&http, &app.url("/me"), Some(&cookie)).await;
    assert_eq!(me.status, 503, "{}", me.text);
    let error = me.json["error"].as_str().unwrap();
    assert!(error.starts_with("redis is unavailable: "), "{error}");
    let login = post(&http, &app.url("/login"), r#"{"user":"gina"}"#, None).await;
    assert_eq!(login.status, 503, "{}", login.text);
    assert!(login.json["error"]
        .as_str()
        .unwrap()
        .starts_with("redis is unavailable"));
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "a dead Redis must fail fast"
    );
    let ready = get(&http, &app.url("/readyz"), None).await;
    assert_eq!(ready.status, 503);
    assert!(ready.json["checks"]["redis"]
        .as_str()
        .unwrap()
        .starts_with("down: "));

    // Back on the same port: the client reconnects by itself. The old
    // session died with that Redis (no persistence): a 401, not a 503.
    redis.restart();
    eventually(Duration::from_secs(20), "login works again", || async {
        post(&http, &app.url("/login"), r#"{"user":"gina"}"#, None)
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(get(&http, &app.url("/me"), Some(&cookie)).await.status, 401);
    let ready = get(&http, &app.url("/readyz"), None).await;
    assert_eq!(ready.json["checks"]["redis"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_runs_no_query() {
    if !services_available() {
        return;
    }
    let pg = Pg::primary(&[]).await;
    let mut redis = RedisServer::start();
    let (db, url) = (pg.url(), redis.url());
    let app = TestApp::start(&[
        ("DATABASE_URL", db.as_str()),
        ("CACHE", "on"),
        ("CACHE_TTL", "1h"),
        ("REDIS_URL", url.as_str()),
        ("PRODUCT_QUERY_MS", "100"),
    ])
    .await;
    app.wait_migrated().await;
    let http = client();
    let queries = || app.metric("db_queries_total{");

    let start = Instant::now();
    let first = get(&http, &app.url("/products/7"), None).await;
    let db_time = start.elapsed();
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["id"], 7);
    assert_eq!(first.json["source"], "db");
    assert!(first.json["name"].as_str().unwrap().ends_with("#7"));
    assert!(first.json["price_cents"].as_i64().unwrap() > 0);
    // The page's second query ranks it among the best sellers.
    assert!(first.json["sales_rank"].as_i64().unwrap() >= 1);
    assert!(first.json["units_sold"].as_i64().unwrap() > 0);
    assert_eq!(queries(), 2.0, "a page is two queries: its row, its rank");
    // The deliberate cost is real work in PostgreSQL (loose bound: this is
    // a behaviour check on a shared machine, not a benchmark).
    assert!(
        db_time >= Duration::from_millis(30),
        "product read took {db_time:?}"
    );

    let second = get(&http, &app.url("/products/7"), None).await;
    assert_eq!(second.json["source"], "cache");
    assert_eq!(
        (&second.json["name"], &second.json["price_cents"]),
        (&first.json["name"], &first.json["price_cents"])
    );
    assert_eq!(
        second.json["sales_rank"], first.json["sales_rank"],
        "the cache keeps the whole page"
    );
    assert_eq!(queries(), 2.0, "a cache hit must not query the database");
    assert_eq!(app.metric("cache_hits_total"), 1.0);
    assert_eq!(app.metric("cache_misses_total"), 1.0);

    let missing = get(&http, &app.url("/products/5000"), None).await;
    assert_eq!(
        (missing.status, missing.json),
        (404, json!({"error": "no such product: 5000"}))
    );
    assert_eq!(queries(), 3.0, "no product, no rank to look up");

    // Without the cache every read is a query.
    let uncached =
        TestApp::start(&[("DATABASE_URL", db.as_str()), ("PRODUCT_QUERY_MS", "0")]).await;
    for _ in 0..2 {
        let p = get(&http, &uncached.url("/products/7"), None).await;
        assert_eq!(p.json["source"], "db");
    }
    assert_eq!(uncached.metric("db_queries_total{"), 4.0);

    // With CACHE=on, a dead Redis is not a dead site: the read goes to the
    // database, at once (not after Redis's command timeout), and says so.
    redis.kill();
    let before = app.metric("db_queries_total{");
    let start = Instant::now();
    for id in [8, 9, 8] {
        let p = get(&http, &app.url(&format!("/products/{id}")), None).await;
        assert_eq!(p.status, 200, "{}", p.text);
        assert_eq!(p.json["source"], "db", "{}", p.text);
    }
    // Three reads waiting for Redis's 2 s command timeout would take 6 s.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a dead cache must not slow every read by its timeout: {:?}",
        start.elapsed()
    );
    assert_eq!(app.metric("db_queries_total{") - before, 6.0);
    assert!(app.metric("cache_errors_total") >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_can_be_stale_primary_reads_are_not() {
    if !services_available() {
        return;
    }
    let primary = Pg::primary(&[]).await;
    let replica = Pg::replica_of(&primary).await;
    let (p_url, r_url) = (primary.url(), replica.url());
    let app = TestApp::start(&[
        ("SERVER_NAME", "server-1"),
        ("DATABASE_URL", p_url.as_str()),
        ("REPLICA_URLS", r_url.as_str()),
        ("PRODUCT_QUERY_MS", "0"),
    ])
    .await;
    app.wait_migrated().await;
    let http = client();
    let (p_name, r_name) = (primary.app_name(), replica.app_name());

    eventually(
        Duration::from_secs(30),
        "readyz ok on both databases",
        || async { get(&http, &app.url("/readyz"), None).await.status == 200 },
    )
    .await;
    let ready = get(&http, &app.url("/readyz"), None).await;
    assert_eq!(
        ready.json["checks"],
        json!({ p_name.clone(): "ok", r_name.clone(): "ok" })
    );

    let dep = post(
        &http,
        &app.url("/accounts/42/deposit"),
        r#"{"amount":100}"#,
        None,
    )
    .await;
    assert_eq!(dep.status, 200, "{}", dep.text);
    assert_eq!(
        dep.json,
        json!({"account": 42, "balance": 100, "db": p_name, "server": "server-1"})
    );
    let read = get(&http, &app.url("/accounts/42?consistency=primary"), None).await;
    assert_eq!(
        read.json,
        json!({"account": 42, "balance": 100, "db": p_name, "server": "server-1"})
    );

    eventually(
        Duration::from_secs(10),
        "the replica catches up",
        || async { get(&http, &app.url("/accounts/42"), None).await.json["balance"] == 100 },
    )
    .await;
    assert_eq!(
        get(&http, &app.url("/accounts/42"), None).await.json["db"],
        r_name
    );
    // Product reads go to the replica too.
    assert_eq!(get(&http, &app.url("/products/1"), None).await.status, 200);

    // Freeze the replica's replay: it still answers, with old data.
    replica.execute("SELECT pg_wal_replay_pause()").await;
    let dep = post(
        &http,
        &app.url("/accounts/42/deposit"),
        r#"{"amount":50}"#,
        None,
    )
    .await;
    assert_eq!(dep.json["balance"], 150);
    let fresh = get(&http, &app.url("/accounts/42?consistency=primary"), None).await;
    assert_eq!(
        fresh.json["balance"], 150,
        "a primary read sees the write at once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale = get(&http, &app.url("/accounts/42"), None).await;
    assert_eq!(stale.status, 200);
    assert_eq!(
        (&stale.json["balance"], &stale.json["db"]),
        (&json!(100), &json!(r_name))
    );

    // An account created while replay is paused does not exist there yet.
    post(
        &http,
        &app.url("/accounts/43/deposit"),
        r#"{"amount":7}"#,
        None,
    )
    .await;
    let missing = get(&http, &app.url("/accounts/43"), None).await;
    assert_eq!(
        (missing.status, missing.json),
        (404, json!({"error": "no such account", "db": r_name}))
    );

    replica.execute("SELECT pg_wal_replay_resume()").await;
    eventually(
        Duration::from_secs(10),
        "the replica catches up again",
        || async { get(&http, &app.url("/accounts/42"), None).await.json["balance"] == 150 },
    )
    .await;

    // Overflow of the balance is refused, and changes nothing.
    primary
        .execute("INSERT INTO accounts (id, balance) VALUES (77, 9223372036854775000)")
        .await;
    let over = post(
        &http,
        &app.url("/accounts/77/deposit"),
        r#"{"amount":1000}"#,
        None,
    )
    .await;
    assert_eq!(over.status, 409, "{}", over.text);
    assert!(over.json["error"].as_str().unwrap().contains("overflow"));
    let read = get(&http, &app.url("/accounts/77?consistency=primary"), None).await;
    assert_eq!(read.json["balance"], 9_223_372_036_854_775_000_i64);

    assert!(app.metric("db_queries_total{target=\"primary\"") >= 5.0);
    assert!(app.metric("db_queries_total{target=\"replica\"") >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_on_a_missing_sync_replica_is_a_504_and_its_connection_is_dropped() {
    if !services_available() {
        return;
    }
    let pg = Pg::primary(&[]).await;
    let db = pg.url();
    let app = TestApp::start(&[
        ("DATABASE_URL", db.as_str()),
        ("WRITE_TIMEOUT", "1s"),
        ("PRODUCT_QUERY_MS", "0"),
    ])
    .await;
    app.wait_migrated().await;
    let http = client();
    assert_eq!(
        post(
            &http,
            &app.url("/accounts/5/deposit"),
            r#"{"amount":10}"#,
            None
        )
        .await
        .status,
        200
    );

    // Synchronous replication to a standby that does not exist: every
    // COMMIT now waits for a confirmation that never comes.
    pg.execute("ALTER SYSTEM SET synchronous_standby_names = 'lab_missing_replica'")
        .await;
    pg.execute("SELECT pg_reload_conf()").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let stuck = post(
        &http,
        &app.url("/accounts/6/deposit"),
        r#"{"amount":25}"#,
        None,
    )
    .await;
    let waited = start.elapsed();
    assert_eq!(stuck.status, 504, "{}", stuck.text);
    assert_eq!(
        stuck.json,
        json!({"error": "127.0.0.1 did not confirm the write within 1s (a synchronous replica may be unreachable); the outcome is unknown", "outcome_unknown": true})
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // The connection stuck in COMMIT left the pool instead of going back.
    assert_eq!(app.state.db().primary().pool_size(), 0);

    // Unknown outcome, indeed: the commit is pending on the server...
    let mut conn = pg.connect().await;
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(waiting, 1);
    // ...and reads (which wait for nobody) still work on fresh connections.
    let read = get(&http, &app.url("/accounts/6"), None).await;
    assert_eq!(read.status, 404, "not visible while its commit waits");

    // Back to asynchronous replication: the pending commit completes, so
    // the "failed" deposit did happen. That is why 504 says "unknown".
    pg.execute("ALTER SYSTEM RESET synchronous_standby_names")
        .await;
    pg.execute("SELECT pg_reload_conf()").await;
    eventually(
        Duration::from_secs(10),
        "the pending deposit lands",
        || async { get(&http, &app.url("/accounts/6"), None).await.json["balance"] == 25 },
    )
    .await;
    let dep = post(
        &http,
        &app.url("/accounts/6/deposit"),
        r#"{"amount":5}"#,
        None,
    )
    .await;
    assert_eq!(dep.json["balance"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_do_not_race() {
    if !services_available() {
        return;
    }
    let pg = Pg::primary(&[]).await;
    pg.execute("CREATE DATABASE race").await;
    let url = pg.url_for("race");
    // Four servers starting at once, each with its own connection: sqlx's
    // migrator serialises them with pg_advisory_lock.
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            lab_app::db::MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))
        })
    });
    for result in futures::future::join_all(runs).await {
        result
            .unwrap()
            .expect("every concurrent migration run succeeds");
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(products, 1000, "seeded once, not four times");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied, lab_app::db::MIGRATOR.iter().count() as i64);

    // And two whole app servers starting together against the same database.
    let apps = [
        TestApp::start(&[("SERVER_NAME", "server-1"), ("DATABASE_URL", &pg.url())]).await,
        TestApp::start(&[("SERVER_NAME", "server-2"), ("DATABASE_URL", &pg.url())]).await,
    ];
    for app in &apps {
        app.wait_migrated().await;
    }
}

/// What, method, path, JSON body, cookie, expected status.
type Case<'a> = (
    &'a str,
    reqwest::Method,
    String,
    Option<&'a str>,
    Option<&'a str>,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_4xx_never_5xx() {
    if !services_available() {
        return;
    }
    let pg = Pg::primary(&[]).await;
    let redis = RedisServer::start();
    let (db, url) = (pg.url(), redis.url());
    let app = TestApp::start(&[
        ("DATABASE_URL", db.as_str()),
        ("SESSION_STORE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("SESSION_SECRET", SECRET),
        ("PRODUCT_QUERY_MS", "0"),
    ])
    .await;
    app.wait_migrated().await;
    let http = client();
    let cookie = post(&http, &app.url("/login"), r#"{"user":"hank"}"#, None)
        .await
        .cookie
        .unwrap();
    let mut tampered = cookie.clone();
    tampered.pop();
    tampered.push('x');
    let big = format!(r#"{{"amount":1,"pad":"{}"}}"#, "x".repeat(100_000));
    post(
        &http,
        &app.url("/accounts/9/deposit"),
        r#"{"amount":1}"#,
        None,
    )
    .await;
    pg.execute("UPDATE accounts SET balance = 9223372036854775800 WHERE id = 9")
        .await;

    let cases: Vec<Case> = vec![
        (
            "bad json",
            reqwest::Method::POST,
            "/login".into(),
            Some("{\"user\""),
            None,
            400,
        ),
        (
            "wrong type",
            reqwest::Method::POST,
            "/login".into(),
            Some(r#"{"user":[1]}"#),
            None,
            422,
        ),
        (
            "missing field",
            reqwest::Method::POST,
            "/accounts/1/deposit".into(),
            Some("{}"),
            None,
            422,
        ),
        (
            "zero amount",
            reqwest::Method::POST,
            "/accounts/1/deposit".into(),
            Some(r#"{"amount":0}"#),
            None,
            400,
        ),
        (
            "negative amount",
            reqwest::Method::POST,
            "/accounts/1/deposit".into(),
            Some(r#"{"amount":-1}"#),
            None,
            400,
        ),
        (
            "huge amount",
            reqwest::Method::POST,
            "/accounts/1/deposit".into(),
            Some(r#"{"amount":1e300}"#),
            None,
            422,
        ),
        (
            "overflowing balance",
            reqwest::Method::POST,
            "/accounts/9/deposit".into(),
            Some(r#"{"amount":100}"#),
            None,
            409,
        ),
        (
            "oversize body",
            reqwest::Method::POST,
            "/accounts/1/deposit".into(),
            Some(big.as_str()),
            None,
            413,
        ),
        (
            "non-numeric account",
            reqwest::Method::GET,
            "/accounts/x".into(),
            None,
            None,
            400,
        ),
        (
            "negative account",
            reqwest::Method::POST,
            "/accounts/-4/deposit".into(),
            Some(r#"{"amount":1}"#),
            None,
            400,
        ),
        (
            "unknown account",
            reqwest::Method::GET,
            "/accounts/123456?consistency=primary".into(),
            None,
            None,
            404,
        ),
        (
            "non-numeric product",
            reqwest::Method::GET,
            "/products/seven".into(),
            None,
            None,
            400,
        ),
        (
            "unknown product",
            reqwest::Method::GET,
            "/products/1001".into(),
            None,
            None,
            404,
        ),
        (
            "missing cookie",
            reqwest::Method::GET,
            "/me".into(),
            None,
            None,
            401,
        ),
        (
            "tampered cookie",
            reqwest::Method::GET,
            "/me".into(),
            None,
            Some(tampered.as_str()),
            401,
        ),
        (
            "unknown session id",
            reqwest::Method::GET,
            "/me".into(),
            None,
            Some("lab_session=AAAAAAAAAAAAAAAAAAAAAA"),
            401,
        ),
        (
            "cart without session",
            reqwest::Method::POST,
            "/cart/items".into(),
            Some(r#"{"product_id":1,"quantity":1}"#),
            None,
            401,
        ),
        (
            "cart bad quantity",
            reqwest::Method::POST,
            "/cart/items".into(),
            Some(r#"{"product_id":1,"quantity":-1}"#),
            Some(cookie.as_str()),
            400,
        ),
        (
            "work too long",
            reqwest::Method::GET,
            "/work?ms=999999".into(),
            None,
            None,
            400,
        ),
        (
            "unknown route",
            reqwest::Method::GET,
            "/admin".into(),
            None,
            None,
            404,
        ),
        (
            "wrong method",
            reqwest::Method::PUT,
            "/login".into(),
            Some("{}"),
            None,
            405,
        ),
    ];
    assert!(cases.len() >= 15);
    // A connection of its own for each case: the server answers an
    // oversize body with 413 before reading it, then closes the
    // connection, and a client that reuses it for the next case can meet
    // that close mid-request (CI did, once).
    for (what, method, path, body, cookie, expected) in cases {
        let http = client();
        let reply = send(&http, method, &app.url(&path), body, cookie).await;
        assert_eq!(reply.status, expected, "{what}: {}", reply.text);
        assert!(reply.json["error"].is_string(), "{what}: {}", reply.text);
        assert_eq!(reply.served_by, "server-test", "{what}");
    }
    // Nothing above was a server error.
    assert_eq!(
        app.metric("http_requests_total{method=\"GET\",route=\"/me\",status=\"5"),
        0.0
    );
    assert!(!app.state.metrics().render().contains("status=\"5"));
}
