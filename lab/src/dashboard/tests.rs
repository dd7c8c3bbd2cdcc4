//! The dashboard's router, driven request by request with tower's
//! `oneshot` against an in-memory Docker and balancer: what each route
//! answers, what it refuses, and what it did to the lab.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use tower::ServiceExt;

use super::*;
use crate::error::LabError;
use crate::images::{Image, VERSION};
use crate::lb_admin::FakeLb;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::labels;
use crate::topology::Topology;
use crate::up::{up, UpOptions};

const PORT: u16 = 8099;
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const LAB: &str = "dash";

struct Fixture {
    rt: Arc<FakeRuntime>,
    lb: FakeLb,
    state: AppState,
}

fn fixture() -> Fixture {
    let rt = Arc::new(FakeRuntime::new());
    for i in Image::ALL {
        rt.add_image(&i.tag(), &[(labels::VERSION, VERSION)]);
    }
    let lb = FakeLb::default();
    let lab = Lab {
        rt: rt.clone(),
        name: LAB.into(),
        lb: lb.connector(),
    };
    // Snapshots every 20 ms, so a test sees several in well under a second.
    let state = AppState::new(
        lab,
        Guard::with_token(PORT, TOKEN),
        Duration::from_millis(20),
    );
    Fixture { rt, lb, state }
}

impl Fixture {
    /// `lab up` with the default topology, on the fakes.
    async fn up(&self) {
        let opts = UpOptions {
            wait: false,
            timeout: Duration::from_secs(1),
            lb: self.lb.connector(),
            progress: Arc::new(crate::progress::Silent),
        };
        let t = Topology {
            port: 0,
            ..Topology::default()
        };
        up(&*self.rt, LAB, &t, &opts).await.unwrap();
        self.rt.clear_calls();
    }

    async fn send(&self, req: Request<Body>) -> Response {
        app(self.state.clone()).oneshot(req).await.unwrap()
    }

    fn kills(&self) -> Vec<String> {
        self.rt
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("kill "))
            .collect()
    }
}

/// A request as the dashboard's own page sends it.
fn from_page(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, format!("127.0.0.1:{PORT}"))
        .header(header::ORIGIN, format!("http://127.0.0.1:{PORT}"))
        .header(guard::TOKEN_HEADER, TOKEN)
}

async fn json(r: Response) -> serde_json::Value {
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body));
    })
}

const CRASH: &str = "/api/services/server-1/crash";

/// Each refusal is answered before the handler runs: the lab is untouched.
async fn refused(f: &Fixture, req: Request<Body>, status: StatusCode, says: &str) {
    let r = f.send(req).await;
    assert_eq!(r.status(), status);
    let body = json(r).await;
    let msg = body["error"].as_str().unwrap();
    assert!(msg.starts_with("refused") && msg.contains(says), "{msg}");
    assert!(f.kills().is_empty(), "refused, yet {:?}", f.kills());
}

#[tokio::test]
async fn a_change_without_the_token_is_refused() {
    let f = fixture();
    f.up().await;
    let req = Request::post(CRASH)
        .header(header::HOST, format!("127.0.0.1:{PORT}"))
        .header(header::ORIGIN, format!("http://127.0.0.1:{PORT}"))
        .body(Body::empty())
        .unwrap();
    refused(&f, req, StatusCode::UNAUTHORIZED, "needs the X-Lab-Token").await;
}

#[tokio::test]
async fn a_change_with_a_wrong_token_is_refused() {
    let f = fixture();
    f.up().await;
    // One character off: as long as the token, and still refused.
    let mut req = from_page("POST", CRASH).body(Body::empty()).unwrap();
    req.headers_mut().insert(
        guard::TOKEN_HEADER,
        "0123456789abcdef0123456789abcdee".parse().unwrap(),
    );
    refused(&f, req, StatusCode::UNAUTHORIZED, "wrong X-Lab-Token").await;
}

#[tokio::test]
async fn a_change_from_another_site_is_refused_even_with_the_token() {
    let f = fixture();
    f.up().await;
    let mut req = from_page("POST", CRASH).body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    refused(&f, req, StatusCode::FORBIDDEN, "https://evil.example").await;
}

#[tokio::test]
async fn dns_rebinding_is_refused_for_changes_and_reads() {
    let f = fixture();
    f.up().await;
    // The attacker's name resolves to 127.0.0.1; the browser sends it as
    // Host and thinks the page and the dashboard share an origin.
    let rebound = format!("evil.example:{PORT}");
    let mut req = from_page("POST", CRASH).body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(header::HOST, rebound.parse().unwrap());
    req.headers_mut()
        .insert(header::ORIGIN, format!("http://{rebound}").parse().unwrap());
    refused(&f, req, StatusCode::FORBIDDEN, "not to host").await;
    let read = Request::get("/api/snapshot")
        .header(header::HOST, rebound)
        .body(Body::empty())
        .unwrap();
    refused(&f, read, StatusCode::FORBIDDEN, "evil.example").await;
}

#[tokio::test]
async fn the_page_with_its_token_crashes_a_server_as_the_cli_does() {
    let f = fixture();
    f.up().await;
    let r = f
        .send(from_page("POST", CRASH).body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert_eq!(body["outcome"]["service"], "server-1");
    assert_eq!(body["outcome"]["event"], "crashed");
    // The text `lab crash server-1` prints, from the same Report.
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("lab start server-1"), "{text}");
    assert_eq!(f.kills(), ["kill dash-server-1 SIGKILL"]);
}

#[tokio::test]
async fn a_script_without_origin_may_act_with_the_token() {
    let f = fixture();
    f.up().await;
    let req = Request::post(CRASH)
        .header(header::HOST, format!("localhost:{PORT}"))
        .header(guard::TOKEN_HEADER, TOKEN)
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(req).await.status(), StatusCode::OK);
    assert_eq!(f.kills().len(), 1);
}

#[tokio::test]
async fn errors_are_one_json_line_with_a_fitting_status() {
    let f = fixture();
    // No lab yet: a conflict with the lab as it is, and the CLI's fix.
    let r = f
        .send(from_page("POST", CRASH).body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(json(r).await["error"]
        .as_str()
        .unwrap()
        .contains("start it with `lab up`"));
    f.up().await;
    let r = f
        .send(
            from_page("POST", "/api/services/server-9/pause")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let err = json(r).await["error"].as_str().unwrap().to_string();
    assert!(err.contains("no service named \"server-9\""), "{err}");
    let r = f
        .send(
            from_page("POST", "/api/services/server-1/explode")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(json(r).await["error"]
        .as_str()
        .unwrap()
        .contains("crash, stop"));
    let r = f
        .send(
            from_page("POST", "/api/scale")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"servers": "many"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(json(r).await["error"].as_str().unwrap().contains("body"));
    // The library's own check, as `lab scale servers 0` gives it.
    let r = f
        .send(
            from_page("POST", "/api/scale")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"servers": 0}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{:?}", json(r).await);
    assert!(f.kills().is_empty());
}

/// A POST with a JSON body, as the page sends it.
fn with_body(uri: &str, body: &str) -> Request<Body> {
    from_page("POST", uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn slow_lag_and_replication_reach_the_library_with_their_bodies() {
    let f = fixture();
    f.up().await;
    // Each answer is the library's own refusal, so the route and the body
    // reached it: the balancer has no proxy to slow, a server has no WAL.
    let r = f
        .send(with_body(
            "/api/services/lb-1/slow",
            r#"{"latency_ms": 200}"#,
        ))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let err = json(r).await["error"].as_str().unwrap().to_string();
    assert!(err.contains("lb-1 has no fault proxy"), "{err}");
    let r = f
        .send(with_body(
            "/api/services/server-1/lag",
            r#"{"delay_ms": 3000}"#,
        ))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let err = json(r).await["error"].as_str().unwrap().to_string();
    assert!(err.contains("database nodes"), "{err}");
    for (uri, body) in [
        ("/api/services/server-1/slow", r#"{"jitter_ms": 5}"#),
        ("/api/services/db-2/lag", r#"{"delay_ms": -1}"#),
        ("/api/replication", r#"{"mode": "sideways"}"#),
    ] {
        let r = f.send(with_body(uri, body)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{uri} {body}");
        let err = json(r).await["error"].as_str().unwrap().to_string();
        assert!(err.contains("not what this action takes"), "{err}");
    }
}

#[tokio::test]
async fn heal_starts_what_crash_stopped() {
    let f = fixture();
    f.up().await;
    f.send(from_page("POST", CRASH).body(Body::empty()).unwrap())
        .await;
    let r = f
        .send(
            from_page("POST", "/api/heal-all")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert_eq!(
        body["healed"],
        serde_json::json!([{"service": "server-1", "mended": "started"}])
    );
    assert!(f.rt.calls().contains(&"start dash-server-1".to_string()));
}

/// The next `data:` of an event stream, as JSON.
async fn next_event(
    body: &mut (impl futures::Stream<Item = std::result::Result<bytes::Bytes, axum::Error>> + Unpin),
) -> serde_json::Value {
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("no event within 5 s")
            .expect("the stream ended")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(end) = text.find("\n\n") {
            let data = text[..end]
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<String>();
            if !data.is_empty() {
                return serde_json::from_str(&data).unwrap();
            }
            text.drain(..end + 2);
        }
    }
}

#[tokio::test]
async fn events_say_no_lab_then_recover_after_up() {
    let f = fixture();
    let r = f
        .send(
            Request::get("/events")
                .header(header::HOST, format!("127.0.0.1:{PORT}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = r.into_body().into_data_stream();
    let first = next_event(&mut body).await;
    assert_eq!(first["state"], "no-lab", "{first}");
    assert_eq!(first["lab"], LAB);
    assert!(first["message"].as_str().unwrap().contains("lab up"));
    let t0 = first["t"].as_u64().unwrap();
    f.up().await;
    // The stream goes on, and shows the lab once it exists.
    let mut seen = first;
    for _ in 0..50 {
        seen = next_event(&mut body).await;
        if seen["state"] == "running" {
            break;
        }
    }
    assert_eq!(seen["state"], "running", "{seen}");
    assert!(seen["t"].as_u64().unwrap() >= t0);
    let names: Vec<&str> = seen["status"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"server-1") && names.contains(&"lb-1"),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_snapshot_is_what_lab_status_json_says() {
    let f = fixture();
    f.up().await;
    f.send(from_page("POST", CRASH).body(Body::empty()).unwrap())
        .await;
    let r = f
        .send(
            Request::get("/api/snapshot")
                .header(header::HOST, format!("localhost:{PORT}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let snap = json(r).await;
    let status = crate::status::status(&*f.rt, LAB, &f.lb.connector())
        .await
        .unwrap();
    let cli = serde_json::to_value(&status).unwrap();
    assert_eq!(snap["status"]["services"], cli["services"]);
    let server1 = cli["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "server-1")
        .unwrap();
    assert_eq!(server1["faults"], serde_json::json!([{"kind": "stopped"}]));
}

#[tokio::test]
async fn two_pages_see_the_same_snapshots() {
    let f = fixture();
    f.up().await;
    let open = || async {
        f.send(
            Request::get("/events")
                .header(header::HOST, format!("127.0.0.1:{PORT}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .into_body()
        .into_data_stream()
    };
    let (mut a, mut b) = (open().await, open().await);
    // Both follow one reader: after their first events, the next snapshot
    // is the same one, to the millisecond.
    let (mut ea, mut eb) = (next_event(&mut a).await, next_event(&mut b).await);
    for _ in 0..20 {
        if ea["t"] == eb["t"] {
            break;
        }
        if ea["t"].as_u64() < eb["t"].as_u64() {
            ea = next_event(&mut a).await;
        } else {
            eb = next_event(&mut b).await;
        }
    }
    assert_eq!(ea, eb);
}

#[tokio::test]
async fn the_page_is_ours_and_fetches_nothing_from_elsewhere() {
    let f = fixture();
    let r = f
        .send(
            Request::get("/")
                .header(header::HOST, format!("127.0.0.1:{PORT}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    let html = String::from_utf8(
        axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(html.contains(r#"src="/app.js""#) && html.contains(r#"href="/style.css""#));
    // The only absolute URL allowed is SVG's namespace, a name, not a fetch.
    for (file, text) in [
        ("index.html", assets::INDEX),
        ("app.js", assets::SCRIPT),
        ("style.css", assets::STYLE),
    ] {
        for (i, _) in text.match_indices("//") {
            let before = &text[..i];
            if before.ends_with("http:") || before.ends_with("https:") {
                assert!(
                    text[i..].starts_with("//www.w3.org/2000/svg"),
                    "{file} names a URL elsewhere: {}",
                    &text[i.saturating_sub(6)..(i + 40).min(text.len())]
                );
            }
        }
        assert!(!text.is_empty(), "{file} is empty");
    }
}

#[tokio::test]
async fn set_names_a_wrong_key_before_docker_is_asked() {
    let f = fixture();
    f.up().await;
    let r = f
        .send(with_body("/api/set", r#"{"pairs": ["sesions=redis"]}"#))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let err = json(r).await["error"].as_str().unwrap().to_string();
    assert!(err.contains("did you mean sessions"), "{err}");
    let r = f.send(with_body("/api/set", r#"{"pairs": []}"#)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(f.rt.calls().iter().all(|c| !c.starts_with("create")));
}

fn fake_lab() -> Lab {
    Lab {
        rt: Arc::new(FakeRuntime::new()),
        name: LAB.into(),
        lb: FakeLb::default().connector(),
    }
}

#[tokio::test]
async fn it_listens_on_loopback_only_and_names_a_taken_port() {
    let d = Dashboard::bind(fake_lab(), 0).await.unwrap();
    let addr = d.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let url = d.url();
    let prefix = format!("http://127.0.0.1:{}/#token=", addr.port());
    assert!(url.starts_with(&prefix), "{url}");
    match Dashboard::bind(fake_lab(), addr.port()).await {
        Err(LabError::PortInUse { port }) => assert_eq!(port, addr.port()),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("bound a port already taken"),
    }
}

#[tokio::test]
async fn a_real_socket_serves_reads_and_guards_changes() {
    let d = Dashboard::bind(fake_lab(), 0).await.unwrap();
    let addr = d.local_addr();
    let token = d.url().split("#token=").nth(1).unwrap().to_string();
    tokio::spawn(d.serve(std::future::pending()));
    // No proxy: a CI machine's HTTP_PROXY must not carry loopback requests.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // The client names the host it was given: both loopback names pass.
    for host in ["127.0.0.1", "localhost"] {
        let r = http
            .get(format!("http://{host}:{}/api/snapshot", addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let snap: serde_json::Value = r.json().await.unwrap();
        assert_eq!(snap["state"], "no-lab", "{snap}");
    }
    let heal = format!("http://127.0.0.1:{}/api/heal-all", addr.port());
    let r = http.post(&heal).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&heal)
        .header(guard::TOKEN_HEADER, &token)
        .send()
        .await
        .unwrap();
    // Past the guard, the library says there is no lab to heal.
    assert_eq!(r.status(), 409);
}
