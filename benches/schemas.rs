//! What checking messages against their JSON Schemas costs a service
//! (`cargo bench --bench schemas`): the heap each compiled validator keeps, the peak while it
//! compiles, and the compile time, for every message schema, after the whole set as a service
//! holds it ([`lexmesh_protocol::schema::validator`] compiles all of them at its first call,
//! with the library's one-time set-up); then the median time to check one valid train job.
//!
//! Heap figures come from a counting global allocator (bytes requested and not yet freed), so
//! they are exact and do not depend on the machine; times are single runs (medians of 1,000
//! for the check).
#![allow(
    unsafe_code,
    reason = "a global allocator that counts bytes must implement the unsafe GlobalAlloc trait"
)]
#![allow(
    clippy::expect_used,
    reason = "a benchmark stops at its first failed step"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "common/stats.rs"]
mod stats;
use stats::median;

/// The system allocator, counting the bytes held and their high-water mark.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(held, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout (through `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap kept and peak heap (both above the starting point, bytes) and the time of `f`.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize, Duration) {
    let before = HELD.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    let kept = HELD.load(Ordering::Relaxed).saturating_sub(before);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    (out, kept, peak, elapsed)
}

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

fn main() {
    println!(
        "### JSON Schema validators: heap and compile time (jsonschema, counting allocator)\n"
    );
    // First, as a service pays it: every validator compiled at the first message checked,
    // with the library's one-time set-up (which would otherwise land on the table's first row).
    let (_, kept, peak, elapsed) = measure(|| lexmesh_protocol::schema::validator("train-job"));
    println!(
        "A service's set (`lexmesh_protocol::schema::validator`, all compiled at the first \
         check, with the library's one-time set-up): kept **{:.1} MiB**, peak {:.1} MiB, \
         {:.1} ms.\n",
        kib(kept) / 1024.0,
        kib(peak) / 1024.0,
        elapsed.as_secs_f64() * 1e3
    );

    println!("| schema | schema text, KB | kept, KiB | peak while compiling, KiB | compile ms |");
    println!("| --- | --- | --- | --- | --- |");
    let mut kept_all = Vec::new();
    let (mut text_total, mut kept_total) = (0usize, 0usize);
    for message in lexmesh_protocol::schema::all() {
        let schema = message.schema.as_value();
        let text = serde_json::to_vec(schema)
            .expect("a schema serialises")
            .len();
        let (validator, kept, peak, elapsed) = measure(|| jsonschema::validator_for(schema));
        kept_all.push(validator.expect("every message schema compiles"));
        text_total += text;
        kept_total += kept;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            message.name,
            text as f64 / 1000.0,
            kib(kept),
            kib(peak),
            elapsed.as_secs_f64() * 1e3
        );
    }
    println!(
        "| all {} | {:.1} | **{:.1} MiB** | | |",
        kept_all.len(),
        text_total as f64 / 1000.0,
        kib(kept_total) / 1024.0
    );
    drop(kept_all);

    let job = br#"{"job_id":"bench-1","dataset":{"object":{"key":"uploads/rulings.jsonl"}},
        "settings":{"model":"bow","epochs":30,"learning_rate":0.02,"patience":10}}"#;
    let times: Vec<Duration> = (0..1000)
        .map(|_| {
            let started = Instant::now();
            lexmesh_protocol::decode::decode::<lexmesh_protocol::TrainJob>(job)
                .expect("the bench's train job is valid");
            started.elapsed()
        })
        .collect();
    println!(
        "Decoding and checking one valid train job: median {:.1} µs (1,000 runs).",
        median(times.iter().map(|t| t.as_secs_f64() * 1e6))
    );
}
