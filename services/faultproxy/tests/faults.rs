//! Each fault, on real sockets on 127.0.0.1: a client, the proxy, a server.
//! Timings are checked against generous bounds (the machine is shared), but
//! every bound is one a broken fault would cross.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::{echo_server, ms, proxy, round_trip, sink_server};
use lab_contract::faultproxy::{Direction, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

/// Slack allowed above a configured delay: scheduling on a busy machine.
const SLACK_MS: u128 = 150;

fn latency(ms: u64, direction: Direction) -> Fault {
    Fault {
        latency_ms: ms,
        direction,
        ..Fault::default()
    }
}

#[tokio::test]
async fn without_a_fault_bytes_pass_both_ways_and_are_counted() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let mut c = p.connect("svc").await;
    for _ in 0..10 {
        let rtt = round_trip(&mut c, b"hello, service").await;
        assert!(ms(rtt) < 100, "round trip {rtt:?} without a fault");
    }
    let status = p.running.link("svc").unwrap().status();
    assert_eq!(status.open_connections, 1);
    assert_eq!(status.bytes_to_service, 140);
    assert_eq!(status.bytes_from_service, 140);
    assert_eq!(status.fault, None);
}

#[tokio::test]
async fn a_fault_reaches_an_open_connection_and_heal_restores_it() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    // A pooled connection: opened before the fault, kept after it.
    let mut c = p.connect("svc").await;
    let before = round_trip(&mut c, b"ping").await;
    assert!(ms(before) < 100, "{before:?}");

    p.set("svc", latency(150, Direction::Both)).await;
    let slow = round_trip(&mut c, b"ping").await;
    assert!(
        (300..300 + SLACK_MS).contains(&ms(slow)),
        "150 ms each way gave a round trip of {slow:?}"
    );

    p.heal("svc").await;
    let after = round_trip(&mut c, b"ping").await;
    assert!(ms(after) < 100, "healed link still slow: {after:?}");
}

#[tokio::test]
async fn latency_in_one_direction_delays_only_that_direction() {
    let (echo, mut arrivals) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let mut c = p.connect("svc").await;

    for (direction, to_ms, from_ms) in [
        (Direction::ToService, 200, 0),
        (Direction::FromService, 0, 200),
    ] {
        p.set("svc", latency(200, direction)).await;
        while arrivals.try_recv().is_ok() {}
        let sent = Instant::now();
        let rtt = round_trip(&mut c, b"which way?").await;
        let arrived = arrivals.recv().await.unwrap();
        let there = ms(arrived - sent);
        let back = ms(rtt) - there;
        assert!(
            (to_ms..to_ms + SLACK_MS).contains(&there),
            "{direction}: to the service took {there} ms"
        );
        assert!(
            (from_ms..from_ms + SLACK_MS).contains(&back),
            "{direction}: from the service took {back} ms"
        );
    }
}

#[tokio::test]
async fn jitter_varies_the_delay_within_bounds_and_never_reorders() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let c = p.connect("svc").await;
    p.set(
        "svc",
        Fault {
            latency_ms: 60,
            jitter_ms: 40,
            direction: Direction::ToService,
            ..Fault::default()
        },
    )
    .await;

    // 40 numbered messages, 5 ms apart: their delays (20..100 ms) overlap,
    // so only the no-reordering rule keeps them in order.
    let (mut r, mut w) = c.into_split();
    let reader = tokio::spawn(async move {
        let mut arrived = Vec::new();
        for i in 0u64..40 {
            let mut msg = [0u8; 8];
            timeout(Duration::from_secs(5), r.read_exact(&mut msg))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(u64::from_be_bytes(msg), i, "bytes reordered");
            arrived.push(Instant::now());
        }
        arrived
    });
    let mut sent = Vec::new();
    for i in 0u64..40 {
        sent.push(Instant::now());
        w.write_all(&i.to_be_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrived = reader.await.unwrap();
    let delays: Vec<u128> = sent
        .iter()
        .zip(&arrived)
        .map(|(s, a)| ms(*a - *s))
        .collect();
    let min = *delays.iter().min().unwrap();
    let max = *delays.iter().max().unwrap();
    // Lower bound: latency - jitter. Upper: latency + jitter (+ slack).
    assert!(min >= 20, "a message came back after {min} ms (< 60 - 40)");
    assert!(max < 100 + SLACK_MS, "a message came back after {max} ms");
    assert!(max - min >= 10, "no jitter visible: delays {min}..{max} ms");
}

#[tokio::test]
async fn bandwidth_is_held_within_20_percent() {
    let (sink, mut done) = sink_server().await;
    let p = proxy(&[("svc", sink.to_string())]).await;
    let rate = 250_000u64;
    p.set(
        "svc",
        Fault {
            bandwidth_bps: Some(rate),
            ..Fault::default()
        },
    )
    .await;
    let mut c = p.connect("svc").await;
    let payload = vec![7u8; 300_000];
    c.write_all(&payload).await.unwrap();
    c.shutdown().await.unwrap();
    let (total, first, last) = timeout(Duration::from_secs(10), done.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, payload.len());
    let measured = total as f64 / (last - first).as_secs_f64();
    let ratio = measured / rate as f64;
    assert!(
        (0.8..1.2).contains(&ratio),
        "limit {rate} B/s, measured {measured:.0} B/s"
    );
}

#[tokio::test]
async fn bandwidth_is_shared_by_the_connections_of_a_link() {
    let (sink, mut done) = sink_server().await;
    let p = proxy(&[("svc", sink.to_string())]).await;
    let rate = 200_000u64;
    p.set(
        "svc",
        Fault {
            bandwidth_bps: Some(rate),
            ..Fault::default()
        },
    )
    .await;
    let start = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..2 {
        let mut c = p.connect("svc").await;
        writers.push(tokio::spawn(async move {
            c.write_all(&vec![1u8; 150_000]).await.unwrap();
            c.shutdown().await.unwrap();
        }));
    }
    let mut last_end = start;
    for _ in 0..2 {
        let (total, _, last) = timeout(Duration::from_secs(10), done.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(total, 150_000);
        last_end = last_end.max(last);
    }
    // 300 000 bytes at 200 000 B/s for the link: 1.5 s, not 0.75 s.
    let secs = (last_end - start).as_secs_f64();
    assert!(
        (1.2..1.9).contains(&secs),
        "two connections took {secs:.2} s"
    );
}

#[tokio::test]
async fn blackhole_hangs_the_link_and_heal_delivers_the_held_bytes() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    common::blackhole_hangs_the_link_and_heal_delivers(&p).await;
}

#[tokio::test]
async fn reset_refuses_new_connections_and_cuts_open_ones() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    common::reset_refuses_and_cuts_open_connections(&p).await;
}

#[tokio::test]
async fn slow_close_passes_a_close_on_late() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;

    // The client closes its side; the echo server closes back as soon as it
    // sees that; the client waits for the server's close.
    async fn close_round_trip(p: &common::Proxy) -> Duration {
        let mut c = p.connect("svc").await;
        round_trip(&mut c, b"x").await;
        let start = Instant::now();
        c.shutdown().await.unwrap();
        let mut buf = [0u8; 1];
        let n = timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        start.elapsed()
    }

    let quick = close_round_trip(&p).await;
    assert!(ms(quick) < 100, "close without a fault took {quick:?}");
    p.set(
        "svc",
        Fault {
            slow_close_ms: 400,
            direction: Direction::ToService,
            ..Fault::default()
        },
    )
    .await;
    let slow = close_round_trip(&p).await;
    assert!(
        (400..400 + SLACK_MS).contains(&ms(slow)),
        "slow close of 400 ms took {slow:?}"
    );
}

#[tokio::test]
async fn an_upstream_given_by_name_is_resolved_when_a_client_connects() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", format!("localhost:{}", echo.port()))]).await;
    let mut c = p.connect("svc").await;
    round_trip(&mut c, b"by name").await;
}

#[tokio::test]
async fn an_unreachable_upstream_resets_the_client() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = proxy(&[("svc", format!("127.0.0.1:{port}"))]).await;
    let mut c = p.connect("svc").await;
    let mut buf = [0u8; 1];
    let r = timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(r.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn reset_cuts_the_service_side_with_an_rst_too() {
    // The test plays the service, so it can read its own side.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = proxy(&[("svc", service.local_addr().unwrap().to_string())]).await;
    let mut client = p.connect("svc").await;
    client.write_all(b"hi").await.unwrap();
    let (mut upstream, _) = timeout(Duration::from_secs(2), service.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 2];
    upstream.read_exact(&mut buf).await.unwrap();

    p.set(
        "svc",
        Fault {
            reset: true,
            ..Fault::default()
        },
    )
    .await;
    let read = timeout(Duration::from_secs(2), upstream.read(&mut buf))
        .await
        .expect("service side not cut");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn healing_a_latency_sends_the_bytes_in_flight_at_once() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let mut c = p.connect("svc").await;
    p.set("svc", latency(3000, Direction::ToService)).await;
    let start = Instant::now();
    c.write_all(b"in flight").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.heal("svc").await;
    let mut buf = [0u8; 9];
    timeout(Duration::from_secs(2), c.read_exact(&mut buf))
        .await
        .expect("bytes in flight still held after heal")
        .unwrap();
    assert_eq!(&buf, b"in flight");
    assert!(
        ms(start.elapsed()) < 100 + SLACK_MS,
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_blackhole_from_the_service_lets_requests_in_and_holds_answers() {
    let (echo, mut arrivals) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let mut c = p.connect("svc").await;
    round_trip(&mut c, b"warm").await;
    while arrivals.try_recv().is_ok() {}
    p.set(
        "svc",
        Fault {
            blackhole: true,
            direction: Direction::FromService,
            ..Fault::default()
        },
    )
    .await;
    c.write_all(b"query").await.unwrap();
    // The service gets the query...
    timeout(Duration::from_secs(2), arrivals.recv())
        .await
        .expect("the request did not reach the service")
        .unwrap();
    // ...but its answer is held.
    let mut buf = [0u8; 5];
    assert!(timeout(Duration::from_millis(300), c.read_exact(&mut buf))
        .await
        .is_err());
    p.heal("svc").await;
    timeout(Duration::from_secs(2), c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"query");
}

#[tokio::test]
async fn latency_and_bandwidth_combine() {
    let (sink, mut done) = sink_server().await;
    let p = proxy(&[("svc", sink.to_string())]).await;
    p.set(
        "svc",
        Fault {
            latency_ms: 200,
            bandwidth_bps: Some(200_000),
            direction: Direction::ToService,
            ..Fault::default()
        },
    )
    .await;
    let mut c = p.connect("svc").await;
    let start = Instant::now();
    c.write_all(&vec![3u8; 100_000]).await.unwrap();
    c.shutdown().await.unwrap();
    let (total, first, last) = timeout(Duration::from_secs(10), done.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 100_000);
    // The first byte waits for the latency; the rest follow at the rate.
    assert!(
        (200..200 + SLACK_MS).contains(&ms(first - start)),
        "first byte after {:?}",
        first - start
    );
    let spread = (last - first).as_secs_f64();
    assert!(
        (0.4..0.6).contains(&spread),
        "100 kB at 200 kB/s took {spread:.2} s"
    );
}

#[tokio::test]
async fn connections_are_counted_while_open_and_only_then() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = p.connect("svc").await;
        round_trip(&mut c, b"hi").await;
        clients.push(c);
    }
    let link = p.running.link("svc").unwrap();
    assert_eq!(link.status().open_connections, 50);
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(3);
    while link.status().open_connections > 0 {
        assert!(
            Instant::now() < deadline,
            "{} still open",
            link.status().open_connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(link.status().total_connections, 50);
}

/// A connection used before any fault sits idle on the fast path (both ways
/// in one task); a latency set then is felt by its very next request, each
/// way, and after a heal it is quick again.
#[tokio::test]
async fn a_latency_reaches_a_connection_idle_on_the_fast_path() {
    let (echo, mut arrivals) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let mut c = p.connect("svc").await;
    for _ in 0..3 {
        round_trip(&mut c, b"warm").await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    p.set("svc", latency(200, Direction::FromService)).await;
    while arrivals.try_recv().is_ok() {}
    let sent = Instant::now();
    let rtt = round_trip(&mut c, b"next request").await;
    let there = ms(arrivals.recv().await.unwrap() - sent);
    assert!(there < SLACK_MS, "the request was held {there} ms");
    assert!(
        (200..200 + SLACK_MS).contains(&ms(rtt)),
        "200 ms from the service gave a round trip of {rtt:?}"
    );

    p.heal("svc").await;
    let after = round_trip(&mut c, b"healed").await;
    assert!(ms(after) < 100, "healed link still slow: {after:?}");
    assert_eq!(
        p.running.link("svc").unwrap().status().bytes_to_service,
        3 * 4 + 12 + 6
    );
}

/// The fast path passes a half-close on (the client is done sending) and
/// keeps the other way open; a fault set then still reaches that other way.
#[tokio::test]
async fn a_half_closed_connection_on_the_fast_path_still_feels_a_fault() {
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = proxy(&[("svc", service.local_addr().unwrap().to_string())]).await;
    let mut client = p.connect("svc").await;
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let (mut upstream, _) = timeout(Duration::from_secs(2), service.accept())
        .await
        .unwrap()
        .unwrap();
    let mut request = Vec::new();
    timeout(Duration::from_secs(2), upstream.read_to_end(&mut request))
        .await
        .expect("the client's close was not passed on")
        .unwrap();
    assert_eq!(request, b"request");

    p.set("svc", latency(200, Direction::FromService)).await;
    let sent = Instant::now();
    upstream.write_all(b"answer").await.unwrap();
    drop(upstream);
    let mut answer = Vec::new();
    timeout(Duration::from_secs(2), client.read_to_end(&mut answer))
        .await
        .expect("answer or close not passed on")
        .unwrap();
    assert_eq!(answer, b"answer");
    let took = ms(sent.elapsed());
    assert!(
        (200..200 + SLACK_MS).contains(&took),
        "200 ms from the service took {took} ms"
    );
}
