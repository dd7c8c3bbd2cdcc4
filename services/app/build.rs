//! `sqlx::migrate!` embeds `migrations/` at compile time, but on stable Rust
//! the compiler does not know it read those files: without this, a new or
//! edited migration would leave a stale binary that never applies it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
