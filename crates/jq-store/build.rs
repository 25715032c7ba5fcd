//! `sqlx::migrate!` embeds `migrations/` at compile time; without this,
//! cargo does not rebuild the store when a migration file changes, and a
//! stale copy is what runs.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
