//! Handler tests without a network: the whole [`app`](crate::app) is called
//! with `tower::ServiceExt::oneshot`, one request at a time.
//!
//! The database URL points at a closed port, so these tests also show what a
//! client gets when PostgreSQL is unreachable: a fast 503 naming it. Tests
//! that need real PostgreSQL and Redis live in `tests/`.

use std::{collections::HashMap, time::Instant};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, AppState, Config};

pub(crate) const SECRET: &str = "test-secret-test-secret-test-secret!";

fn app_for(store: &str) -> Router {
    app(state(store))
}

fn state(store: &str) -> AppState {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("SERVER_NAME", "server-7"),
        // Port 1 on loopback: nothing listens, connections fail at once.
        ("DATABASE_URL", "postgres://lab@127.0.0.1:1/lab"),
        ("SESSION_STORE", store),
        ("SESSION_SECRET", SECRET),
    ]);
    AppState::new(Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap()).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
    text: String,
}

async fn call(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
        text,
    }
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

/// `name=value` of the session cookie set by a response.
fn session_cookie(a: &Answer) -> String {
    let set = a
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("lab_session="))
        .expect("a lab_session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn every_answer_says_who_served_it() {
    let app = app(state("memory"));
    for req in [
        get("/healthz", None),
        get("/", None),
        get("/nope", None),
        get("/metrics", None),
        get("/me", None),
        post("/login", "{", None),
        Request::delete("/me").body(Body::empty()).unwrap(),
    ] {
        let a = call(&app, req).await;
        assert_eq!(a.headers["x-served-by"], "server-7", "status {}", a.status);
    }
}

#[tokio::test]
async fn root_healthz_and_routing_errors() {
    let app = app(state("memory"));
    let a = call(&app, get("/healthz", None)).await;
    assert_eq!(
        (a.status, a.json.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );

    let a = call(&app, get("/", None)).await;
    assert_eq!(a.json["server"], "server-7");
    assert!(a.json["uptime_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(a.json["requests"], 2, "counts itself and /healthz");

    let a = call(&app, get("/nope", None)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json, json!({"error": "no route for GET /nope"}));

    let a = call(&app, Request::delete("/me").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.json["error"].as_str().unwrap().contains("DELETE"));
}

#[tokio::test]
async fn memory_session_login_cart_logout() {
    let app = app(state("memory"));
    let a = call(&app, get("/me", None)).await;
    assert_eq!(
        (a.status, a.json),
        (StatusCode::UNAUTHORIZED, json!({"error": "not logged in"}))
    );

    let a = call(&app, post("/login", r#"{"user":"alice"}"#, None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json, json!({"user": "alice", "server": "server-7"}));
    let cookie = session_cookie(&a);

    let a = call(
        &app,
        post(
            "/cart/items",
            r#"{"product_id":3,"quantity":1}"#,
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(a.json, json!({"cart": [{"product_id": 3, "quantity": 1}]}));
    let a = call(
        &app,
        post(
            "/cart/items",
            r#"{"product_id":3,"quantity":2}"#,
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(a.json, json!({"cart": [{"product_id": 3, "quantity": 3}]}));

    let a = call(&app, get("/me", Some(&cookie))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json,
        json!({"user": "alice", "cart": [{"product_id": 3, "quantity": 3}], "server": "server-7"})
    );

    // A tampered cookie: same shape, one character changed.
    let mut tampered = cookie.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        call(&app, get("/me", Some(&tampered))).await.status,
        StatusCode::UNAUTHORIZED
    );

    let a = call(&app, post("/logout", "", Some(&cookie))).await;
    assert_eq!((a.status, a.json), (StatusCode::OK, json!({"ok": true})));
    assert_eq!(
        call(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Logging out twice is fine.
    assert_eq!(
        call(&app, post("/logout", "", Some(&cookie))).await.status,
        StatusCode::OK
    );

    let metrics = call(&app, get("/metrics", None)).await.text;
    assert!(metrics.contains("sessions_created_total 1"), "{metrics}");
}

#[tokio::test]
async fn memory_sessions_belong_to_one_process() {
    let a_app = app(state("memory"));
    let b_app = app(state("memory"));
    let login = call(&a_app, post("/login", r#"{"user":"bob"}"#, None)).await;
    let cookie = session_cookie(&login);
    assert_eq!(
        call(&a_app, get("/me", Some(&cookie))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&b_app, get("/me", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// base64url without padding, as JWTs use.
fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Hand-made tokens an attacker could send.
pub(crate) fn hostile_tokens() -> Vec<(&'static str, String)> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "mallory", "cart": [], "iat": now, "exp": now + 3600});
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let forged = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"not the server's secret, but long enough"),
    )
    .unwrap();
    let expired = encode(
        &Header::default(),
        &json!({"sub": "mallory", "cart": [], "iat": now - 7200, "exp": now - 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let no_exp = encode(
        &Header::default(),
        &json!({"sub": "mallory", "cart": []}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    vec![
        ("alg none", none),
        ("forged signature", forged),
        ("expired", expired),
        ("no exp", no_exp),
        ("garbage", "xx.yy.zz".into()),
    ]
}

#[tokio::test]
async fn jwt_sessions_are_checked_and_shared() {
    let a_app = app(state("jwt"));
    let b_app = app(state("jwt"));
    let login = call(&a_app, post("/login", r#"{"user":"carol"}"#, None)).await;
    assert_eq!(login.status, StatusCode::OK);
    let cookie = session_cookie(&login);
    // Another server with the same secret knows the user: nothing is stored.
    let a = call(
        &b_app,
        post(
            "/cart/items",
            r#"{"product_id":9,"quantity":4}"#,
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let cookie = session_cookie(&a);
    let a = call(&a_app, get("/me", Some(&cookie))).await;
    assert_eq!(a.json["cart"], json!([{"product_id": 9, "quantity": 4}]));

    for (what, token) in hostile_tokens() {
        let a = call(&a_app, get("/me", Some(&format!("lab_session={token}")))).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(a.json, json!({"error": "not logged in"}), "{what}");
    }

    let a = call(&a_app, post("/logout", "", Some(&cookie))).await;
    let removal = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        removal.starts_with("lab_session=;") && removal.contains("Max-Age=0"),
        "{removal}"
    );
}

#[tokio::test]
async fn bad_input_is_a_json_4xx_before_any_database_work() {
    let app = app(state("memory"));
    let login = call(&app, post("/login", r#"{"user":"dave"}"#, None)).await;
    let cookie = session_cookie(&login);
    let huge = format!(r#"{{"user":"{}"}}"#, "a".repeat(crate::MAX_BODY_BYTES + 10));
    let no_type = Request::post("/login")
        .body(Body::from(r#"{"user":"x"}"#))
        .unwrap();
    let jwt_app = app_for("jwt");
    let jwt_cookies: Vec<(&str, String)> = hostile_tokens()
        .into_iter()
        .map(|(what, token)| (what, format!("lab_session={token}")))
        .collect();
    let mut cases: Vec<(&str, Request<Body>, u16)> = vec![
        ("bad json", post("/login", "{\"user\":", None), 400),
        ("not json at all", post("/login", "hello", None), 400),
        ("wrong type", post("/login", r#"{"user":42}"#, None), 422),
        ("missing field", post("/login", "{}", None), 422),
        (
            "bad user name",
            post("/login", r#"{"user":"a b"}"#, None),
            400,
        ),
        (
            "empty user name",
            post("/login", r#"{"user":""}"#, None),
            400,
        ),
        ("no content type", no_type, 415),
        ("oversize body", post("/login", &huge, None), 413),
        (
            "zero amount",
            post("/accounts/1/deposit", r#"{"amount":0}"#, None),
            400,
        ),
        (
            "negative amount",
            post("/accounts/1/deposit", r#"{"amount":-5}"#, None),
            400,
        ),
        (
            "huge amount",
            post("/accounts/1/deposit", r#"{"amount":100000000001}"#, None),
            400,
        ),
        (
            "amount beyond i64",
            post(
                "/accounts/1/deposit",
                r#"{"amount":99999999999999999999}"#,
                None,
            ),
            422,
        ),
        (
            "fractional amount",
            post("/accounts/1/deposit", r#"{"amount":1.5}"#, None),
            422,
        ),
        (
            "amount as string",
            post("/accounts/1/deposit", r#"{"amount":"50"}"#, None),
            422,
        ),
        (
            "non-numeric account",
            post("/accounts/abc/deposit", r#"{"amount":5}"#, None),
            400,
        ),
        ("zero account", get("/accounts/0", None), 400),
        (
            "bad consistency",
            get("/accounts/1?consistency=strong", None),
            400,
        ),
        ("non-numeric product", get("/products/abc", None), 400),
        ("negative product", get("/products/-3", None), 400),
        (
            "product id overflow",
            get("/products/99999999999999999999", None),
            400,
        ),
        ("work without ms", get("/work", None), 400),
        ("work ms zero", get("/work?ms=0", None), 400),
        ("work ms too long", get("/work?ms=5001", None), 400),
        ("work ms not a number", get("/work?ms=lots", None), 400),
        (
            "cart without session",
            post("/cart/items", r#"{"product_id":3,"quantity":1}"#, None),
            401,
        ),
        (
            "cart quantity zero",
            post(
                "/cart/items",
                r#"{"product_id":3,"quantity":0}"#,
                Some(&cookie),
            ),
            400,
        ),
        (
            "cart quantity huge",
            post(
                "/cart/items",
                r#"{"product_id":3,"quantity":101}"#,
                Some(&cookie),
            ),
            400,
        ),
        (
            "cart unknown product",
            post(
                "/cart/items",
                r#"{"product_id":1001,"quantity":1}"#,
                Some(&cookie),
            ),
            400,
        ),
        (
            "cart missing field",
            post("/cart/items", r#"{"product_id":3}"#, Some(&cookie)),
            422,
        ),
        (
            "me with junk cookie",
            get("/me", Some("lab_session=garbage")),
            401,
        ),
    ];
    let memory_cases = cases.len();
    // The same table, on a jwt server: hostile tokens on both session routes.
    for (what, cookie) in &jwt_cookies {
        cases.push((what, get("/me", Some(cookie)), 401));
        cases.push((
            what,
            post(
                "/cart/items",
                r#"{"product_id":3,"quantity":1}"#,
                Some(cookie),
            ),
            401,
        ));
    }
    assert!(cases.len() >= 15);
    for (i, (what, req, expected)) in cases.into_iter().enumerate() {
        let target = if i < memory_cases { &app } else { &jwt_app };
        let a = call(target, req).await;
        assert_eq!(a.status.as_u16(), expected, "{what}: {}", a.text);
        assert!(
            a.json["error"].is_string(),
            "{what}: not a JSON error: {}",
            a.text
        );
        assert_eq!(a.headers["x-served-by"], "server-7", "{what}");
    }
}

#[tokio::test]
async fn a_dead_database_is_a_fast_503_naming_it() {
    let app = app(state("memory"));
    let start = Instant::now();
    // Concurrently: each waits for the pool's connect timeout (2 s).
    let answers = futures::future::join_all(
        [
            post("/accounts/1/deposit", r#"{"amount":5}"#, None),
            get("/accounts/1", None),
            get("/products/1", None),
        ]
        .map(|req| call(&app, req)),
    )
    .await;
    for a in answers {
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
        let error = a.json["error"].as_str().unwrap();
        assert!(error.starts_with("127.0.0.1 is unavailable: "), "{error}");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));

    let a = call(&app, get("/readyz", None)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json["ready"], false);
    assert!(a.json["checks"]["127.0.0.1"]
        .as_str()
        .unwrap()
        .starts_with("down: "));
}

#[tokio::test]
async fn work_burns_for_the_time_asked() {
    let app = app(state("memory"));
    let start = Instant::now();
    let a = call(&app, get("/work?ms=60", None)).await;
    assert_eq!(a.json, json!({"ms": 60, "server": "server-7"}));
    assert!(start.elapsed() >= std::time::Duration::from_millis(60));
}

#[tokio::test]
async fn metrics_count_by_route_template_and_status() {
    let app = app(state("memory"));
    call(&app, get("/products/abc", None)).await;
    call(&app, get("/products/-1", None)).await;
    call(&app, get("/nowhere/42", None)).await;
    let text = call(&app, get("/metrics", None)).await.text;
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/products/{id}",status="400"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="unmatched",status="404"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("/products/abc") && !text.contains("/nowhere"),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    for family in [
        "http_request_duration_seconds histogram",
        "db_queries counter",
        "cache_hits counter",
        "cache_misses counter",
        "sessions_created counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family} missing from {text}"
        );
    }
}
