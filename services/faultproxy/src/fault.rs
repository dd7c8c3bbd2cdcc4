//! # A fault, ready to apply to bytes
//!
//! The admin API speaks in [`Fault`] (milliseconds, bytes per second, a
//! direction). The pumps that copy bytes want something else: for the way
//! they copy (to the service, or from it), how long to hold each chunk, which
//! token bucket to draw from, whether to hold everything. [`ActiveFault`] is
//! that translation, built once when a fault is set and shared (behind an
//! `Arc`, through a `tokio::sync::watch`) by every connection of the link.
//!
//! The token bucket lives here, not in a connection, because a link's
//! bandwidth is the link's: two connections on a 1 Mbit/s link share that
//! 1 Mbit/s, they do not get one each.

use std::sync::Mutex;
use std::time::Duration;

use lab_contract::faultproxy::{Direction, Fault};
use rand::Rng;
use tokio::time::Instant;

/// The fault of one link, as the pumps read it.
#[derive(Debug, Default)]
pub struct ActiveFault {
    /// What the admin API was given (`None`: healthy), shown back by `GET /links`.
    pub spec: Option<Fault>,
    /// Refuse new connections, cut open ones.
    pub reset: bool,
    to_service: Shaping,
    from_service: Shaping,
}

impl ActiveFault {
    /// A healthy link.
    pub fn healthy() -> Self {
        Self::default()
    }

    /// Translates a validated fault.
    pub fn new(spec: Fault) -> Self {
        let shaping = |way: Direction| {
            if !spec.direction.covers(way) {
                return Shaping::default();
            }
            Shaping {
                latency: Duration::from_millis(spec.latency_ms),
                jitter: Duration::from_millis(spec.jitter_ms),
                bucket: spec.bandwidth_bps.map(TokenBucket::new),
                blackhole: spec.blackhole,
                slow_close: Duration::from_millis(spec.slow_close_ms),
            }
        };
        Self {
            reset: spec.reset,
            to_service: shaping(Direction::ToService),
            from_service: shaping(Direction::FromService),
            spec: Some(spec),
        }
    }

    /// The shaping of the bytes going `way` (`ToService` or `FromService`).
    pub fn shaping(&self, way: Direction) -> &Shaping {
        match way {
            Direction::FromService => &self.from_service,
            _ => &self.to_service,
        }
    }

    /// No fault at all, either way: connections may take the fast path.
    pub fn is_clear(&self) -> bool {
        !self.reset && self.to_service.is_clear() && self.from_service.is_clear()
    }

    /// Whether a new connection must wait before its upstream is dialled: on a
    /// hung link the client's first packet (the SYN) would never arrive.
    pub fn holds_new_connections(&self) -> bool {
        self.to_service.blackhole
    }
}

/// What happens to the bytes flowing one way.
#[derive(Debug, Default)]
pub struct Shaping {
    pub latency: Duration,
    pub jitter: Duration,
    pub bucket: Option<TokenBucket>,
    pub blackhole: bool,
    pub slow_close: Duration,
}

impl Shaping {
    /// Nothing to do: the pump may take its fast path.
    pub fn is_clear(&self) -> bool {
        self.latency.is_zero()
            && self.bucket.is_none()
            && !self.blackhole
            && self.slow_close.is_zero()
    }

    /// Whether queued bytes wait for their due time (else they are sent now:
    /// the delay was healed while they were in flight).
    pub fn delays(&self) -> bool {
        !self.latency.is_zero() || !self.slow_close.is_zero()
    }

    /// One chunk's one-way delay: `latency ± jitter`, uniform.
    pub fn sample_delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let j = self.jitter.as_micros() as i64;
        let offset = rand::rng().random_range(-j..=j);
        let micros = (self.latency.as_micros() as i64 + offset).max(0);
        Duration::from_micros(micros as u64)
    }
}

/// A token bucket in its "virtual clock" form (GCRA): instead of counting
/// tokens, it remembers when the link will next be free. Sending `n` bytes
/// books `n / rate` seconds of the link; a sender waits for its booking.
/// A small burst (one chunk) may go early, as a real bucket's depth allows.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: Duration,
    /// The largest piece one booking may take: small enough that connections
    /// sharing the link take turns, and the rate holds over short spans.
    pub max_chunk: usize,
    free_at: Mutex<Option<Instant>>,
}

impl TokenBucket {
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        // 20 ms worth of bytes per piece, within [1 byte, 16 KiB].
        let max_chunk = ((rate / 50.0) as usize).clamp(1, 16 * 1024);
        Self {
            rate,
            burst: Duration::from_secs_f64(max_chunk as f64 / rate),
            max_chunk,
            free_at: Mutex::new(None),
        }
    }

    /// Books the link for `n` bytes; returns when they may be sent.
    pub fn reserve(&self, n: usize) -> Instant {
        let now = Instant::now();
        let cost = Duration::from_secs_f64(n as f64 / self.rate);
        // A poisoned lock only means another pump panicked mid-booking; the
        // instant inside is still a valid instant.
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let booked = free_at.map_or(now, |t| t.max(now));
        let start = booked
            .checked_sub(self.burst)
            .map_or(now, |early| early.max(now));
        *free_at = Some(booked + cost);
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_books_the_link_at_its_rate() {
        let bucket = TokenBucket::new(100_000);
        let start = Instant::now();
        let mut last = start;
        // 50 pieces of 2000 bytes = 100 000 bytes = one second of the link
        for _ in 0..50 {
            last = bucket.reserve(2000);
        }
        let booked = last.duration_since(start).as_secs_f64();
        // the last piece starts after 49 pieces' time minus the burst
        assert!((0.9..1.0).contains(&booked), "booked {booked} s");
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let s = Shaping {
            latency: Duration::from_millis(100),
            jitter: Duration::from_millis(30),
            ..Shaping::default()
        };
        let samples: Vec<_> = (0..1000).map(|_| s.sample_delay()).collect();
        assert!(samples.iter().all(|d| (70..=130).contains(&d.as_millis())));
        let min = samples.iter().min().unwrap();
        let max = samples.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_millis(40),
            "no spread: {min:?}..{max:?}"
        );
    }

    #[test]
    fn direction_picks_the_way_a_fault_touches() {
        let f = ActiveFault::new(Fault {
            direction: Direction::FromService,
            latency_ms: 10,
            ..Fault::default()
        });
        assert!(f.shaping(Direction::ToService).is_clear());
        assert_eq!(
            f.shaping(Direction::FromService).latency,
            Duration::from_millis(10)
        );
    }
}
