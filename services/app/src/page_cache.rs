//! An in-process cache of rendered product pages, as big as the server's
//! memory allows (lesson 2, `bigger-server`).
//!
//! `GET /pages/{id}` answers a whole product page. A page in the cache costs
//! nothing but a copy; a page that is not costs a product read in PostgreSQL
//! and a render. `?ms=N` adds N ms of the server's CPU to every page, in the
//! cache or not: the work per user (name, cart, prices) no memory removes.
//! The cache holds as many pages as a quarter of the memory the server is
//! given ([`PAGE_CACHE_SHARE`]): the container's own memory limit,
//! read from its cgroup and read again every second, so `lab resize --memory
//! 256m server-1` grows (or shrinks) the cache live. That is how memory turns
//! into capacity: more memory, more pages kept, fewer database reads.
//!
//! It is a least-recently-used cache (the `lru` crate): under a skewed
//! workload the popular pages stay, the rarely asked ones come and go. Each
//! doubling of memory keeps a further slice of pages, each slice less
//! popular than the one before: that is where diminishing returns come from.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use lab_contract::app::{env, PageCacheStats, PAGE_BYTES, PAGE_CACHE_SHARE};
use lru::LruCache;
use serde::Deserialize;

use crate::error::{AppError, AppPath, AppQuery};
use crate::routes::PRODUCT_IDS;
use crate::AppState;

/// Where cgroup v2 keeps a container's memory limit (`max`: none).
const CGROUP_V2_MAX: &str = "/sys/fs/cgroup/memory.max";
/// Where cgroup v1 keeps it (a huge number: none).
const CGROUP_V1_LIMIT: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
/// With no limit found, the cache sizes itself as if given this much.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// How often the limit is read again.
const REFRESH: Duration = Duration::from_secs(1);

/// The pages, the counters, and where the memory figure comes from.
#[derive(Debug)]
pub struct PageCache {
    pages: Mutex<LruCache<i64, Bytes>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The memory the cache was last sized from (0: none found).
    memory: AtomicU64,
    /// `PAGE_CACHE_MEMORY`, when set: wins over the cgroup.
    fixed: Option<u64>,
    started: Instant,
    /// Milliseconds after `started` when the limit was last read.
    checked_ms: AtomicU64,
}

/// The pages that fit in a quarter of `memory` (at least one).
pub fn capacity_pages(memory: Option<u64>) -> usize {
    let bytes = memory.unwrap_or(DEFAULT_MEMORY) / PAGE_CACHE_SHARE;
    usize::try_from(bytes / PAGE_BYTES as u64)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// A cgroup memory file's text as a limit: `max` (v2) or a number past any
/// real machine (v1's "unlimited") is no limit.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 50).then_some(n)
}

/// `64m`, `1g`, `512k` or bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().last()? {
        (i, 'k') => (&t[..i], 1 << 10),
        (i, 'm') => (&t[..i], 1 << 20),
        (i, 'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// The memory limit of the container this process runs in, if any.
fn cgroup_limit() -> Option<u64> {
    [CGROUP_V2_MAX, CGROUP_V1_LIMIT]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| parse_cgroup_limit(&t))
}

impl PageCache {
    /// Sized from `PAGE_CACHE_MEMORY` when set (tests, or a server that
    /// should not trust its cgroup), else from the container's limit.
    pub fn from_env() -> Result<Self, AppError> {
        let fixed = match std::env::var(env::PAGE_CACHE_MEMORY) {
            Ok(v) if !v.trim().is_empty() => Some(parse_size(&v).ok_or_else(|| {
                AppError::Internal(format!(
                    "{} must be a size such as 64m or 1g (got {v:?})",
                    env::PAGE_CACHE_MEMORY
                ))
            })?),
            _ => None,
        };
        Ok(Self::new(fixed))
    }

    /// A cache sized from `fixed`, or from the cgroup when None.
    pub fn new(fixed: Option<u64>) -> Self {
        let memory = fixed.or_else(cgroup_limit);
        let cap = NonZeroUsize::new(capacity_pages(memory)).unwrap_or(NonZeroUsize::MIN);
        PageCache {
            pages: Mutex::new(LruCache::new(cap)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            memory: AtomicU64::new(memory.unwrap_or(0)),
            fixed,
            started: Instant::now(),
            checked_ms: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<i64, Bytes>> {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the memory limit again when a second has passed, and resizes
    /// the cache if it changed (shrinking drops the least recently used).
    fn refresh(&self) {
        if self.fixed.is_some() {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < REFRESH.as_millis() as u64
            || self
                .checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let memory = cgroup_limit();
        if memory.unwrap_or(0) != self.memory.swap(memory.unwrap_or(0), Ordering::Relaxed) {
            let cap = NonZeroUsize::new(capacity_pages(memory)).unwrap_or(NonZeroUsize::MIN);
            self.lock().resize(cap);
            tracing::info!(memory = ?memory, pages = cap.get(), "page cache resized to the new memory limit");
        }
    }

    fn get(&self, id: i64) -> Option<Bytes> {
        self.refresh();
        self.lock().get(&id).cloned()
    }

    fn put(&self, id: i64, page: Bytes) {
        self.lock().put(id, page);
    }

    /// What the cache holds and has done.
    pub fn stats(&self) -> PageCacheStats {
        self.refresh();
        let (cap, len) = {
            let p = self.lock();
            (p.cap().get() as u64, p.len() as u64)
        };
        let memory = self.memory.load(Ordering::Relaxed);
        PageCacheStats {
            memory_bytes: (memory > 0).then_some(memory),
            capacity_pages: cap,
            pages: len,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// A product page of exactly [`PAGE_BYTES`]: the product, then its
/// description and specification sheet (deterministic text, so every
/// server renders the same page).
pub fn render(p: &crate::db::Product) -> Bytes {
    let head = format!(
        "<!doctype html><html><head><title>{name}</title></head><body><h1>{name}</h1>\
         <p class=\"price\">{}.{:02}</p><section class=\"specs\">",
        p.price_cents / 100,
        p.price_cents % 100,
        name = p.name
    );
    let tail = "</section></body></html>\n";
    let mut page = String::with_capacity(PAGE_BYTES);
    page.push_str(&head);
    let mut row = 0u64;
    while page.len() + tail.len() < PAGE_BYTES {
        row += 1;
        let line = format!(
            "<p>{} spec {row}: {}</p>",
            p.name,
            (p.id as u64).wrapping_mul(2_654_435_761).wrapping_add(row) % 100_000
        );
        page.push_str(&line);
    }
    page.truncate(PAGE_BYTES - tail.len());
    page.push_str(tail);
    Bytes::from(page)
}

/// Query of `GET /pages/{id}` and `GET /products/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// CPU milliseconds the server spends on this page besides its data
    /// (filling in the user's name, cart and prices): memory, cache or not,
    /// a page costs this. It is the part of a request that neither more
    /// memory nor a cache can remove, only more servers.
    pub(crate) ms: Option<u64>,
}

/// `GET /pages/{id}[?ms=N]`: a product page, from memory when it is there.
pub async fn page(
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppQuery(query): AppQuery<PageQuery>,
) -> Result<Response, AppError> {
    if !PRODUCT_IDS.contains(&id) {
        return Err(AppError::NotFound(format!(
            "no page for product {id}: products are {} to {}",
            PRODUCT_IDS.start(),
            PRODUCT_IDS.end()
        )));
    }
    if let Some(ms) = query.ms {
        crate::routes::burn(&state, ms).await?;
    }
    let cache = state.pages();
    let html = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    if let Some(page) = cache.get(id) {
        cache.hits.fetch_add(1, Ordering::Relaxed);
        return Ok((html, page).into_response());
    }
    cache.misses.fetch_add(1, Ordering::Relaxed);
    let p = state
        .db()
        .product(id, state.metrics())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no such product: {id}")))?;
    let page = render(&p);
    cache.put(id, page.clone());
    Ok((html, page).into_response())
}

/// `GET /page-cache`: the cache's size and counters.
pub async fn stats(State(state): State<AppState>) -> Json<PageCacheStats> {
    Json(state.pages().stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_memory_in_pages() {
        // 512 KiB pages: 32 MiB of memory keeps 8 MiB of them, 16 pages.
        assert_eq!(capacity_pages(Some(32 << 20)), 16);
        assert_eq!(capacity_pages(Some(256 << 20)), 128);
        assert_eq!(capacity_pages(None), capacity_pages(Some(DEFAULT_MEMORY)));
        assert_eq!(capacity_pages(Some(1000)), 1);
    }

    #[test]
    fn cgroup_limits_read_both_versions() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("33554432\n"), Some(32 << 20));
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit(""), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512kb"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn pages_are_exactly_page_bytes() {
        let p = crate::db::Product {
            id: 7,
            name: "Quiet Lamp #7".into(),
            price_cents: 1299,
            sales_rank: Some(3),
            units_sold: 640,
        };
        let page = render(&p);
        assert_eq!(page.len(), PAGE_BYTES);
        assert!(page.ends_with(b"</html>\n"));
        assert_eq!(render(&p), page, "the same product renders the same page");
    }

    #[test]
    fn least_recently_used_pages_go_first_and_resizing_keeps_the_rest() {
        let c = PageCache::new(Some(3 * PAGE_CACHE_SHARE * PAGE_BYTES as u64));
        for id in 1..=3 {
            c.put(id, Bytes::from(vec![id as u8]));
        }
        assert!(c.get(1).is_some());
        c.put(4, Bytes::from_static(b"4"));
        assert!(c.get(2).is_none(), "2 was the least recently used");
        assert_eq!(c.stats().pages, 3);
        c.lock().resize(NonZeroUsize::new(2).unwrap());
        assert_eq!(c.stats().pages, 2);
        assert_eq!(c.stats().capacity_pages, 2);
    }
}
