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
use super::{job, report};
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

    async fn send(&self, req: Req) -> Response {
        app(self.state.clone()).oneshot(req.build()).await.unwrap()
    }

    fn kills(&self) -> Vec<String> {
        self.rt
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("kill "))
            .collect()
    }
}

/// Every request the tests send, built in one place: as the dashboard's
/// own page sends it (its Host, its Origin, the token), or as a plain read
/// (Host only), then changed where a test needs another header.
struct Req {
    method: &'static str,
    uri: String,
    host: String,
    origin: Option<String>,
    token: Option<String>,
    json: Option<String>,
}

/// A request from the page, with the token.
fn page(method: &'static str, uri: &str) -> Req {
    Req {
        method,
        uri: uri.into(),
        host: format!("127.0.0.1:{PORT}"),
        origin: Some(format!("http://127.0.0.1:{PORT}")),
        token: Some(TOKEN.into()),
        json: None,
    }
}

/// A GET as a browser's address bar or `EventSource` sends it.
fn read(uri: &str) -> Req {
    Req {
        method: "GET",
        uri: uri.into(),
        host: format!("127.0.0.1:{PORT}"),
        origin: None,
        token: None,
        json: None,
    }
}

impl Req {
    fn host(mut self, host: &str) -> Req {
        self.host = host.into();
        self
    }
    fn origin(mut self, origin: Option<&str>) -> Req {
        self.origin = origin.map(str::to_string);
        self
    }
    fn token(mut self, token: Option<&str>) -> Req {
        self.token = token.map(str::to_string);
        self
    }
    fn json(mut self, body: &str) -> Req {
        self.json = Some(body.into());
        self
    }
    fn build(self) -> Request<Body> {
        let mut b = Request::builder()
            .method(self.method)
            .uri(self.uri)
            .header(header::HOST, self.host);
        if let Some(o) = self.origin {
            b = b.header(header::ORIGIN, o);
        }
        if let Some(t) = self.token {
            b = b.header(guard::TOKEN_HEADER, t);
        }
        let body = match self.json {
            Some(j) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(j)
            }
            None => Body::empty(),
        };
        b.body(body).unwrap()
    }
}

async fn json(r: Response) -> serde_json::Value {
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body));
    })
}

const CRASH: &str = "/api/services/server-1/crash";

/// Each refusal is answered before the handler runs: the lab is untouched.
async fn refused(f: &Fixture, req: Req, status: StatusCode, says: &str) {
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
    let req = page("POST", CRASH).token(None);
    refused(&f, req, StatusCode::UNAUTHORIZED, "needs the X-Lab-Token").await;
}

#[tokio::test]
async fn a_change_with_a_wrong_token_is_refused() {
    let f = fixture();
    f.up().await;
    // One character off: as long as the token, and still refused.
    let req = page("POST", CRASH).token(Some("0123456789abcdef0123456789abcdee"));
    refused(&f, req, StatusCode::UNAUTHORIZED, "wrong X-Lab-Token").await;
}

#[tokio::test]
async fn a_change_from_another_site_is_refused_even_with_the_token() {
    let f = fixture();
    f.up().await;
    let req = page("POST", CRASH).origin(Some("https://evil.example"));
    refused(&f, req, StatusCode::FORBIDDEN, "https://evil.example").await;
}

#[tokio::test]
async fn dns_rebinding_is_refused_for_changes_and_reads() {
    let f = fixture();
    f.up().await;
    // The attacker's name resolves to 127.0.0.1; the browser sends it as
    // Host and thinks the page and the dashboard share an origin.
    let rebound = format!("evil.example:{PORT}");
    let req = page("POST", CRASH)
        .host(&rebound)
        .origin(Some(&format!("http://{rebound}")));
    refused(&f, req, StatusCode::FORBIDDEN, "not to host").await;
    let snapshot = read("/api/snapshot").host(&rebound);
    refused(&f, snapshot, StatusCode::FORBIDDEN, "evil.example").await;
}

#[tokio::test]
async fn the_page_with_its_token_crashes_a_server_as_the_cli_does() {
    let f = fixture();
    f.up().await;
    let r = f.send(page("POST", CRASH)).await;
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
    let req = page("POST", CRASH)
        .host(&format!("localhost:{PORT}"))
        .origin(None);
    assert_eq!(f.send(req).await.status(), StatusCode::OK);
    assert_eq!(f.kills().len(), 1);
}

#[tokio::test]
async fn errors_are_one_json_line_with_a_fitting_status() {
    let f = fixture();
    // No lab yet: a conflict with the lab as it is, and the CLI's fix.
    let r = f.send(page("POST", CRASH)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(json(r).await["error"]
        .as_str()
        .unwrap()
        .contains("start it with `lab up`"));
    f.up().await;
    let r = f.send(page("POST", "/api/services/server-9/pause")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let err = json(r).await["error"].as_str().unwrap().to_string();
    assert!(err.contains("no service named \"server-9\""), "{err}");
    let r = f.send(page("POST", "/api/services/server-1/explode")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(json(r).await["error"]
        .as_str()
        .unwrap()
        .contains("crash, stop"));
    let r = f
        .send(page("POST", "/api/scale").json(r#"{"servers": "many"}"#))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(json(r).await["error"].as_str().unwrap().contains("body"));
    // The library's own check, as `lab scale servers 0` gives it.
    let r = f
        .send(page("POST", "/api/scale").json(r#"{"servers": 0}"#))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{:?}", json(r).await);
    assert!(f.kills().is_empty());
}

/// A POST with a JSON body, as the page sends it.
fn with_body(uri: &str, body: &str) -> Req {
    page("POST", uri).json(body)
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
    f.send(page("POST", CRASH)).await;
    let r = f.send(page("POST", "/api/heal-all")).await;
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
    let r = f.send(read("/events")).await;
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
    f.send(page("POST", CRASH)).await;
    let r = f
        .send(read("/api/snapshot").host(&format!("localhost:{PORT}")))
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
    let open = || async { f.send(read("/events")).await.into_body().into_data_stream() };
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
    let r = f.send(read("/")).await;
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

/// The text of an answer.
async fn text(r: Response) -> String {
    let body = axum::body::to_bytes(r.into_body(), 1 << 22).await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_page_action_is_marked_on_the_time_axis() {
    let f = fixture();
    f.up().await;
    assert_eq!(f.send(page("POST", CRASH)).await.status(), StatusCode::OK);
    let snap = json(f.send(read("/api/snapshot")).await).await;
    let marks = snap["marks"].as_array().unwrap();
    assert!(
        marks
            .iter()
            .any(|m| m["source"] == "page" && m["text"] == "crash server-1"),
        "{marks:?}"
    );
    // The condition the page colours comes with the snapshot.
    assert_eq!(snap["conditions"]["server-1"], "down", "{snap}");
    assert_eq!(snap["conditions"]["lb-1"], "ok", "{snap}");
}

#[tokio::test]
async fn the_reader_marks_a_change_made_elsewhere() {
    let f = fixture();
    f.up().await;
    let mut events = f.send(read("/events")).await.into_body().into_data_stream();
    next_event(&mut events).await;
    // As `lab crash server-1` in a terminal: not through the page.
    let faults = crate::faults::Faults {
        rt: &*f.rt,
        lab: LAB,
        lb: f.lb.connector(),
    };
    faults.crash("server-1").await.unwrap();
    let mut seen = serde_json::Value::Null;
    for _ in 0..50 {
        seen = next_event(&mut events).await;
        let marked = seen["marks"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["source"] == "lab" && m["text"] == "server-1: ok → down")
        });
        if marked {
            return;
        }
    }
    panic!("no mark of server-1 going down: {seen}");
}

#[tokio::test]
async fn a_load_from_the_page_is_bounded_and_alone() {
    let f = fixture();
    f.up().await;
    for (body, says) in [
        (
            r#"{"scenario": "browse", "rate": 10, "duration_s": 0}"#,
            "duration",
        ),
        (
            r#"{"scenario": "browse", "rate": 10, "duration_s": 3600}"#,
            "600 s",
        ),
        (
            r#"{"scenario": "browse", "rate": 100000, "duration_s": 5}"#,
            "at most",
        ),
        (
            r#"{"scenario": "browse", "users": 5000, "duration_s": 5}"#,
            "at most",
        ),
        (
            r#"{"scenario": "shop", "users": 5, "duration_s": 5}"#,
            "no scenario",
        ),
        // The engine's own check, as `lab load` gives it.
        (
            r#"{"scenario": "browse", "rate": 5, "users": 5, "duration_s": 5}"#,
            "exclude",
        ),
    ] {
        let r = f.send(with_body("/api/load", body)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let err = json(r).await["error"].as_str().unwrap().to_string();
        assert!(err.contains(says), "{body}: {err}");
    }
    let r = f.send(page("POST", "/api/job/stop")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // A load against the fake lab's entry point (nothing listens there):
    // it runs, counts its failures, and a second job is refused meanwhile.
    let r = f
        .send(with_body(
            "/api/load",
            r#"{"scenario": "ping", "users": 1, "duration_s": 30}"#,
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", json(r).await);
    let r = f
        .send(with_body(
            "/api/lesson",
            r#"{"name": "sessions", "quick": true}"#,
        ))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(json(r).await["error"]
        .as_str()
        .unwrap()
        .contains("load: ping, 1 users, 30 s is running"));
    let r = f.send(page("POST", "/api/job/stop")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut record = serde_json::Value::Null;
    for _ in 0..200 {
        record = json(f.send(read("/api/job")).await).await;
        if record["phase"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record["phase"], "done", "{record}");
    assert_eq!(record["kind"], "load");
    assert!(record["load"]["interrupted"].as_bool().unwrap(), "{record}");
    // Stopped, it makes room for the next job.
    let r = f
        .send(with_body("/api/lesson", r#"{"name": "no-such"}"#))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// A lesson's record, as the page's job keeps it, with two verdicts.
fn lesson_record() -> job::Record {
    use crate::lessons::{Step, Verdict};
    let verdict = |e: &str, passed| Verdict {
        expectation: e.into(),
        measured: "3 of 120 requests failed <b>".into(),
        passed,
    };
    let started = job::now_ms() - 20_000;
    let seconds = (1..=3)
        .map(|t| job::Second {
            at: started + t * 1000,
            entry: crate::load::report::TimelineEntry {
                t,
                requests: 10,
                ok: 9,
                errors: 1,
                session_losses: 0,
                stale_reads: 0,
                errors_by_kind: crate::load::report::Errors {
                    connect: 1,
                    ..Default::default()
                },
                p50_ms: 2.0,
                p99_ms: 9.0,
                max_ms: 10.0,
                late: 0,
                per_server: [("server-1".to_string(), 10)].into_iter().collect(),
            },
        })
        .collect();
    job::Record {
        id: 1,
        kind: job::Kind::Lesson,
        title: "lesson 6: sessions".into(),
        phase: job::Phase::Done,
        started,
        ended: Some(started + 10_000),
        seconds,
        steps: [
            Step::Say {
                text: "crash server-1".into(),
            },
            Step::Verdict(verdict("sessions survive a crash with redis", true)),
            Step::Verdict(verdict("no session is lost", false)),
        ]
        .into_iter()
        .map(|step| job::TimedStep {
            at: started + 3_000,
            step,
        })
        .collect(),
        load: None,
        lesson: None,
        error: None,
    }
}

#[test]
fn the_report_stands_alone_and_holds_the_verdicts() {
    let r = lesson_record();
    let marks = vec![job::Mark {
        t: r.started + 2_000,
        source: job::Source::Page,
        text: "crash server-1".into(),
    }];
    let html = report::html(LAB, &r, &marks);
    assert!(html.starts_with("<!doctype html>"));
    // Nothing is fetched: no src= or href= at all, so no http(s):// one.
    for attr in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(attr), "the report has {attr}");
    }
    for (i, _) in html.match_indices("://") {
        let around = &html[i.saturating_sub(5)..(i + 24).min(html.len())];
        assert!(around.contains("http://www.w3.org/2000/svg"), "{around}");
    }
    assert!(html.contains("sessions survive a crash with redis"));
    assert!(html.contains("no session is lost"));
    assert!(html.contains("✗"));
    // What a measurement says is text, never markup.
    assert!(html.contains("failed &lt;b&gt;") && !html.contains("failed <b>"));
    // The fault timeline, and the charts' script and data inline.
    assert!(html.contains("crash server-1") && html.contains("Fault timeline"));
    assert!(html.contains("const Charts") && html.contains("const REPORT = {"));
    assert!(
        !html.contains("</script><"),
        "the data ends no script early"
    );
}

#[tokio::test]
async fn report_is_a_download_once_something_ran() {
    let f = fixture();
    let r = f.send(read("/report")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(json(r).await["error"]
        .as_str()
        .unwrap()
        .contains("start one"));
    f.up().await;
    let r = f
        .send(with_body(
            "/api/load",
            r#"{"scenario": "ping", "users": 1, "duration_s": 1}"#,
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..200 {
        if !f.state.jobs.busy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = f.send(read("/report")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("scaling-lab-dash-load.html"));
    let html = text(r).await;
    assert!(html.contains("load: ping, 1 users, 1 s"), "{html}");
    assert!(html.contains("lost writes (audit)"));
    assert!(!html.contains("src=") && !html.contains("href="));
}

#[tokio::test]
async fn the_cheap_read_runs_nothing_inside_the_containers_and_keeps_the_full_reads_findings() {
    let f = fixture();
    f.up().await;
    let (rt, lb) = (&*f.rt, f.lb.connector());
    let full = crate::status::status_to(rt, LAB, &lb, crate::status::Depth::Full)
        .await
        .unwrap();
    assert!(
        f.rt.calls().iter().any(|c| c.starts_with("exec ")),
        "a full read asks inside: {:?}",
        f.rt.calls()
    );
    f.rt.clear_calls();
    let mut quick = crate::status::status_to(rt, LAB, &lb, crate::status::Depth::Outside)
        .await
        .unwrap();
    let execs: Vec<String> =
        f.rt.calls()
            .into_iter()
            .filter(|c| c.starts_with("exec "))
            .collect();
    assert!(execs.is_empty(), "{execs:?}");
    let db1 = |r: &crate::status::StatusReport| {
        r.services
            .iter()
            .find(|s| s.name == "db-1")
            .map(|s| s.db_role)
            .unwrap()
    };
    assert_eq!(db1(&quick), None);
    snapshot::carry(&mut quick, &full);
    assert_eq!(db1(&quick), db1(&full));
    // Carried over, the cheap read says what the full one said.
    assert_eq!(
        serde_json::to_value(&quick).unwrap()["services"],
        serde_json::to_value(&full).unwrap()["services"]
    );
}
