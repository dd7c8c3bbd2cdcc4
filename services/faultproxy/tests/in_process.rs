//! The in-process link (lab-app's own port): the service reads the client's
//! socket itself until a fault is set, and from then on every byte goes
//! through the same pumps as in the proxy's own process. Each fault is
//! checked on real sockets on 127.0.0.1, with the bounds of `faults.rs`.

mod common;

use std::time::Duration;

use common::{in_process_echo, ms, round_trip};
use lab_contract::faultproxy::{Direction, Fault};
use lab_faultproxy::StartError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

const SLACK_MS: u128 = 150;

fn latency(ms: u64, direction: Direction) -> Fault {
    Fault {
        latency_ms: ms,
        direction,
        ..Fault::default()
    }
}

#[tokio::test]
async fn without_a_fault_the_service_reads_the_socket_itself_and_bytes_are_counted() {
    let (p, mut reads) = in_process_echo().await;
    let mut c = p.connect("svc").await;
    for _ in 0..10 {
        let rtt = round_trip(&mut c, b"hello, service").await;
        assert!(ms(rtt) < 100, "round trip {rtt:?} without a fault");
        let (_, direct) = reads.recv().await.unwrap();
        assert!(direct, "a healthy connection left its socket");
    }
    let status = p.running.link("svc").unwrap().status();
    assert_eq!(status.open_connections, 1);
    assert_eq!(status.total_connections, 1);
    assert_eq!(status.bytes_to_service, 140);
    assert_eq!(status.bytes_from_service, 140);
}

/// A connection idle in a pool feels a new latency on its very next
/// request, in the direction set, and stays with the pumps after a heal.
#[tokio::test]
async fn a_latency_reaches_an_idle_connection_each_way_and_heal_restores_it() {
    let (p, mut reads) = in_process_echo().await;
    let mut c = p.connect("svc").await;
    round_trip(&mut c, b"warm").await;
    assert!(reads.recv().await.unwrap().1);
    tokio::time::sleep(Duration::from_millis(50)).await;

    for (direction, to_ms, from_ms) in [
        (Direction::ToService, 200, 0),
        (Direction::FromService, 0, 200),
    ] {
        p.set("svc", latency(200, direction)).await;
        let sent = Instant::now();
        let rtt = round_trip(&mut c, b"which way?").await;
        let (arrived, direct) = reads.recv().await.unwrap();
        assert!(
            !direct,
            "a fault was set and the service still reads the socket"
        );
        let there = ms(arrived - sent);
        let back = ms(rtt) - there;
        assert!(
            (to_ms..to_ms + SLACK_MS).contains(&there),
            "{direction}: the request took {there} ms to arrive"
        );
        assert!(
            (from_ms..from_ms + SLACK_MS).contains(&back),
            "{direction}: the answer took {back} ms to come back"
        );
    }

    p.heal("svc").await;
    let after = round_trip(&mut c, b"healed").await;
    assert!(ms(after) < 100, "healed link still slow: {after:?}");
    let status = p.running.link("svc").unwrap().status();
    assert_eq!(status.bytes_to_service, 4 + 10 + 10 + 6);
    assert_eq!(status.bytes_from_service, 4 + 10 + 10 + 6);
}

#[tokio::test]
async fn a_connection_made_during_a_fault_feels_it_from_its_first_byte() {
    let (p, mut reads) = in_process_echo().await;
    p.set("svc", latency(150, Direction::Both)).await;
    let mut c = p.connect("svc").await;
    let rtt = round_trip(&mut c, b"first").await;
    assert!(!reads.recv().await.unwrap().1);
    assert!(
        (300..300 + SLACK_MS).contains(&ms(rtt)),
        "150 ms each way gave a round trip of {rtt:?}"
    );
}

#[tokio::test]
async fn bandwidth_is_held_within_20_percent() {
    let (p, _reads) = in_process_echo().await;
    let rate = 250_000u64;
    p.set(
        "svc",
        Fault {
            bandwidth_bps: Some(rate),
            direction: Direction::FromService,
            ..Fault::default()
        },
    )
    .await;
    let mut c = p.connect("svc").await;
    // The echo sends it back through the limit; the way there is free.
    let payload = vec![7u8; 300_000];
    let mut back = vec![0u8; payload.len()];
    let (mut r, mut w) = c.split();
    let start = Instant::now();
    let mut first = None;
    let send = async {
        w.write_all(&payload).await.unwrap();
    };
    let receive = async {
        let mut got = 0;
        while got < back.len() {
            let n = r.read(&mut back[got..]).await.unwrap();
            assert!(n > 0, "closed after {got} bytes");
            first.get_or_insert_with(Instant::now);
            got += n;
        }
    };
    timeout(Duration::from_secs(10), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("300 kB at 250 kB/s did not arrive within 10 s");
    let elapsed = first.unwrap_or(start).elapsed();
    assert_eq!(back, payload);
    let measured = payload.len() as f64 / elapsed.as_secs_f64();
    let ratio = measured / rate as f64;
    // The first read may hold a bucket's worth: measured from it, the rate
    // is a little high rather than low.
    assert!(
        (0.8..1.2).contains(&ratio),
        "limit {rate} B/s, measured {measured:.0} B/s"
    );
}

#[tokio::test]
async fn blackhole_hangs_the_link_and_heal_delivers_the_held_bytes() {
    let (p, _reads) = in_process_echo().await;
    common::blackhole_hangs_the_link_and_heal_delivers(&p).await;
}

#[tokio::test]
async fn reset_refuses_new_connections_and_cuts_open_ones() {
    let (p, _reads) = in_process_echo().await;
    common::reset_refuses_and_cuts_open_connections(&p).await;
}

#[tokio::test]
async fn a_close_on_the_socket_reaches_the_service_and_back() {
    let (p, _reads) = in_process_echo().await;
    let mut c = p.connect("svc").await;
    round_trip(&mut c, b"bye").await;
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(Duration::from_secs(2), c.read_to_end(&mut rest))
        .await
        .expect("the service did not close after the client")
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn an_in_process_link_must_be_one_of_the_links() {
    assert!(matches!(
        lab_faultproxy::start(common::in_process_config("service")).await,
        Err(StartError::NoInProcessLink(name)) if name == "service"
    ));
}
