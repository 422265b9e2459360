//! Configuration: the YAML schema (`schema`), its units (`units`), and
//! loading with `include:` and FILE:LINE:COL errors (`load`), and its JSON
//! Schema for editors (`json_schema`). The loaded config is only the
//! written form; `crate::gateway` compiles it.

pub mod json_schema;
pub mod load;
pub mod schema;
pub mod spans;
pub mod units;
pub mod validate;

pub use load::{load_file, load_str, read_file, read_str, ConfigError, LoadedConfig, Reading};

/// Turns a serde_path_to_error path into segments (`apis`, `0`, `path`).
pub(crate) fn path_segments(path: &serde_path_to_error::Path) -> Vec<String> {
    segment_strings(path.iter())
}

/// Segments as strings: a sequence index as its decimal digits.
pub(crate) fn segment_strings<'a>(
    segments: impl IntoIterator<Item = &'a serde_path_to_error::Segment>,
) -> Vec<String> {
    use serde_path_to_error::Segment;
    segments
        .into_iter()
        .filter_map(|seg| match seg {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect()
}

/// Formats segments as the key path users read: `apis[0].operations[2].path`.
pub fn display_path<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for seg in segments {
        let seg = seg.as_ref();
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}
