//! The GraphQL operation matcher on arbitrary documents: never a panic or a
//! stack overflow, and what it selects is well formed.
//!
//! First byte, bit 0: an `operationName` follows up to the first NUL.
//! Bit 1: the next two bytes are a count N (at most 16,384: a longer chain
//! is over the default `max_body` and never reaches the matcher), and the
//! document is a chain of N fragments each spreading the next (the attack
//! of issue #16: 12,000 of them overflowed a worker's stack), the last
//! one's body the rest of the input. Chains that long would otherwise need
//! inputs of hundreds of KiB. Runaway work shows as libFuzzer's `-timeout`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn chain(n: usize, tail: &str) -> String {
    let mut doc = String::from("query { ...f0 }");
    for i in 0..n {
        doc.push_str(&format!(" fragment f{i} on Query {{ ...f{} }}", i + 1));
    }
    doc.push_str(&format!(" fragment f{n} on Query {{ {tail} }}"));
    doc
}

fuzz_target!(|data: &[u8]| {
    let Some((&flag, mut rest)) = data.split_first() else {
        return;
    };
    let mut chained = None;
    if flag & 2 != 0 {
        let [hi, lo, tail @ ..] = rest else {
            return;
        };
        chained = Some(usize::from(u16::from_be_bytes([*hi, *lo])) % 16_385);
        rest = tail;
    }
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (name, document) = match (flag & 1, rest.split_once('\0')) {
        (1, Some((name, doc))) => (Some(name), doc),
        _ => (None, rest),
    };
    let document = match chained {
        Some(n) => chain(n, document),
        None => document.to_string(),
    };
    if let Ok(selected) = tollgate::graphql::select(&document, name) {
        assert_eq!(selected.fields.len(), selected.children.len());
        for (i, field) in selected.fields.iter().enumerate() {
            assert!(!field.is_empty() && field != "__typename", "{selected:?}");
            assert!(!selected.fields[..i].contains(field), "{selected:?}");
        }
    }
});
