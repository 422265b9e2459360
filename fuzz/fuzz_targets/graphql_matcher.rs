//! The GraphQL operation matcher on arbitrary documents: never a panic or a
//! stack overflow, and what it selects is well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: whether an `operationName` follows up to the first NUL.
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (name, document) = match (flag & 1, rest.split_once('\0')) {
        (1, Some((name, doc))) => (Some(name), doc),
        _ => (None, rest),
    };
    if let Ok(selected) = tollgate::graphql::select(document, name) {
        assert_eq!(selected.fields.len(), selected.children.len());
        for (i, field) in selected.fields.iter().enumerate() {
            assert!(!field.is_empty() && field != "__typename", "{selected:?}");
            assert!(!selected.fields[..i].contains(field), "{selected:?}");
        }
    }
});
