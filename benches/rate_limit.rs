//! One GCRA decision of the memory store: on a hot key (every call on the
//! same bucket: lock + lookup + update) and spread over 1M distinct keys
//! (cache misses, the flood case).

// The allocator the `tollgate` binary runs with (src/main.rs), so the
// figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::state::{GcraRule, MemoryStore, SECOND};

const NOW: u64 = 1_700_000_000 * SECOND;

fn ip_key(i: u32) -> String {
    let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
    format!("per-ip:ip:{a}.{b}.{c}.{d}")
}

fn decisions(c: &mut Criterion) {
    // Generous enough that the hot key never runs dry while measured: the
    // cost measured is the decision, allowed, committed.
    let rule = GcraRule::new(u64::MAX / 4, 60 * SECOND, u64::MAX / 4);

    let store = MemoryStore::new();
    c.bench_function("gcra hot key", |b| {
        b.iter(|| black_box(store.gcra_now(black_box("per-ip:ip:10.0.0.1"), rule, NOW, true)))
    });

    const KEYS: u32 = 1_000_000;
    let keys: Vec<String> = (0..KEYS).map(ip_key).collect();
    let store = MemoryStore::new();
    for key in &keys {
        store.gcra_now(key, rule, NOW, true);
    }
    let mut i = 0usize;
    c.bench_function("gcra over 1M distinct keys", |b| {
        b.iter(|| {
            // A stride co-prime with 1M walks every key in a cache-hostile order.
            i = (i + 7919) % keys.len();
            black_box(store.gcra_now(&keys[i], rule, NOW, true))
        })
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
