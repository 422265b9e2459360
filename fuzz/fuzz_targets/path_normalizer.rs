//! The path normaliser on whatever the URI parser lets through as a path:
//! it never panics, and what it returns is final (normalising it again
//! changes nothing), absolute, free of dot-segments and empty segments,
//! and still a valid request path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::routing::normalize_path;

fuzz_target!(|data: &[u8]| {
    // Only what reaches the gateway: hyper hands it a parsed URI.
    let Ok(pq) = http::uri::PathAndQuery::try_from(data) else {
        return;
    };
    let Ok(normal) = normalize_path(pq.path()) else {
        return;
    };
    assert!(normal.starts_with('/'), "{normal:?}");
    assert!(
        normalize_path(&normal).as_deref() == Ok(normal.as_ref()),
        "not idempotent: {:?} -> {normal:?} -> {:?}",
        pq.path(),
        normalize_path(&normal)
    );
    for segment in normal.split('/').skip(1) {
        assert!(segment != ".." && segment != ".", "{normal:?}");
    }
    assert!(!normal.contains("//"), "{normal:?}");
    // The gateway forwards it: it must still parse as a path.
    assert!(
        http::uri::PathAndQuery::try_from(normal.as_ref()).is_ok(),
        "{normal:?}"
    );
});
