//! Where each node of a YAML document was written: a map from node path
//! (`["apis", "0", "operations", "2", "path"]`) to a 1-based line and
//! column. serde_yaml's `Value` forgets positions, so the loader builds this
//! index from yaml-rust2's marked events and looks errors up in it.
//!
//! A mapping entry is placed at its *key* (that is what the user edits when
//! a value is wrong, missing or unknown); a sequence item at the item's own
//! start; the document root at its first node.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

impl Pos {
    /// Where an error goes when nothing better is known: the file's start.
    pub const START: Pos = Pos { line: 1, column: 1 };

    /// This position, or the end of `text` when a parser placed it past
    /// the last line (yaml-rust2 does, for a node or an error at the end of
    /// a file without a final newline).
    pub fn within(self, text: &str) -> Pos {
        self.before(Pos::end_of(text))
    }

    fn before(self, end: Pos) -> Pos {
        if self.line <= end.line {
            self
        } else {
            end
        }
    }

    /// Just after the last character of `text`.
    fn end_of(text: &str) -> Pos {
        let last = text.rsplit('\n').next().unwrap_or_default();
        Pos {
            line: text.split('\n').count(),
            column: last.chars().count() + 1,
        }
    }

    /// yaml-rust2 counts lines from 1 but columns from 0 (its own error
    /// text adds 1 to the column), so only the column is shifted.
    fn from_marker(mark: Marker) -> Pos {
        Pos {
            line: mark.line().max(1),
            column: mark.col() + 1,
        }
    }
}

/// A YAML syntax error: the parser's message and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The parser's message.
    pub message: String,
}

/// A key written twice in one mapping (serde_yaml refuses the document,
/// but places the error at the mapping, not at the second key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The key path of the mapping holding the key twice.
    pub path: Vec<String>,
    /// Where the key is first written.
    pub first: Pos,
    /// Where it is written again.
    pub second: Pos,
}

/// Node path -> position, for one YAML document.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    spans: HashMap<Vec<String>, Pos>,
    duplicates: Vec<DuplicateKey>,
}

impl SpanIndex {
    /// Indexes the first document of `text`.
    pub fn build(text: &str) -> Result<SpanIndex, SyntaxError> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let end = Pos::end_of(text);
        parser.load(&mut builder, false).map_err(|e| SyntaxError {
            pos: Pos::from_marker(*e.marker()).before(end),
            message: e.info().to_string(),
        })?;
        let mut spans = builder.spans;
        for pos in spans.values_mut() {
            *pos = pos.before(end);
        }
        let mut duplicates = builder.duplicates;
        for d in &mut duplicates {
            d.first = d.first.before(end);
            d.second = d.second.before(end);
        }
        Ok(SpanIndex { spans, duplicates })
    }

    /// Keys written twice in the same mapping, in document order.
    pub fn duplicates(&self) -> &[DuplicateKey] {
        &self.duplicates
    }

    /// The position of the deepest node along `path` that exists: the node
    /// itself when it was written, else its nearest written ancestor (a
    /// missing field is reported at the mapping that lacks it).
    pub fn locate<S: AsRef<str>>(&self, path: &[S]) -> Pos {
        let mut key: Vec<String> = path.iter().map(|s| s.as_ref().to_string()).collect();
        loop {
            if let Some(pos) = self.spans.get(&key) {
                return *pos;
            }
            if key.pop().is_none() {
                return Pos::START;
            }
        }
    }

    /// Whether `path` was written in the document.
    pub fn contains<S: AsRef<str>>(&self, path: &[S]) -> bool {
        let key: Vec<String> = path.iter().map(|s| s.as_ref().to_string()).collect();
        self.spans.contains_key(&key)
    }
}

/// One open collection while the events stream past.
enum Frame {
    Map {
        path: Vec<String>,
        /// The key just read, where it was written, and whether it was a
        /// scalar; `None` while the next node is a key.
        key: Option<(String, Marker, bool)>,
    },
    Seq {
        path: Vec<String>,
        next_index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    spans: HashMap<Vec<String>, Pos>,
    duplicates: Vec<DuplicateKey>,
    /// Depth inside a collection used as a mapping key (`? [a, b]: v`):
    /// such keys have no path of their own, so their insides are skipped.
    complex_key_depth: usize,
    /// Only the first document is indexed; serde_yaml rejects more.
    done: bool,
}

impl Builder {
    /// Called at the start of every node; returns the node's path, or
    /// `None` when the node is a mapping key (it starts no path of its
    /// own) or lies inside a complex key.
    fn node(&mut self, scalar: Option<&str>, mark: Marker) -> Option<Vec<String>> {
        match self.stack.last_mut() {
            None => {
                self.spans
                    .entry(Vec::new())
                    .or_insert(Pos::from_marker(mark));
                Some(Vec::new())
            }
            Some(Frame::Seq { path, next_index }) => {
                let mut path = path.clone();
                path.push(next_index.to_string());
                *next_index += 1;
                self.spans.insert(path.clone(), Pos::from_marker(mark));
                Some(path)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some((name, key_mark, scalar_key)) => {
                    let mut path = path.clone();
                    path.push(name);
                    let here = Pos::from_marker(key_mark);
                    if let Some(first) = self.spans.insert(path.clone(), here) {
                        if scalar_key {
                            self.duplicates.push(DuplicateKey {
                                path: path.clone(),
                                first,
                                second: here,
                            });
                        }
                        // Later lookups should find the first writing.
                        self.spans.insert(path.clone(), first);
                    }
                    Some(path)
                }
                None => {
                    // A key. Non-scalar keys get a placeholder name so the
                    // value after them is still consumed as a value.
                    let name = scalar.unwrap_or("?").to_string();
                    *key = Some((name, mark, scalar.is_some()));
                    // yaml-rust2 marks a block mapping's start at the `:`
                    // after its first key, so a mapping that is a sequence
                    // item (or the root) would point past its own start;
                    // the first key is where it really begins.
                    let here = Pos::from_marker(mark);
                    if let Some(start) = self.spans.get_mut(path.as_slice()) {
                        *start = (*start).min(here);
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        if self.complex_key_depth > 0 {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.complex_key_depth += 1,
                Event::MappingEnd | Event::SequenceEnd => self.complex_key_depth -= 1,
                _ => {}
            }
            return;
        }
        match ev {
            Event::Scalar(ref value, ..) => {
                self.node(Some(value), mark);
            }
            Event::Alias(_) => {
                self.node(None, mark);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                match self.node(None, mark) {
                    Some(path) if is_map => self.stack.push(Frame::Map { path, key: None }),
                    Some(path) => self.stack.push(Frame::Seq {
                        path,
                        next_index: 0,
                    }),
                    None => self.complex_key_depth = 1,
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    const DOC: &str = "\
version: 1
listen: 127.0.0.1:8080
apis:
  - name: one
    operations:
      - id: a
        path: /x
      - { id: b, path: /y }
apply: [auth, { type: ip }]
";

    #[test]
    fn mapping_entries_are_placed_at_their_key() {
        let spans = SpanIndex::build(DOC).unwrap();
        assert_eq!(spans.locate(&["version"]), pos(1, 1));
        assert_eq!(spans.locate(&["listen"]), pos(2, 1));
        assert_eq!(spans.locate(&["apis", "0", "name"]), pos(4, 5));
        assert_eq!(
            spans.locate(&["apis", "0", "operations", "0", "path"]),
            pos(7, 9)
        );
        assert_eq!(
            spans.locate(&["apis", "0", "operations", "1", "path"]),
            pos(8, 18)
        );
    }

    #[test]
    fn sequence_items_are_placed_at_their_start() {
        let spans = SpanIndex::build(DOC).unwrap();
        assert_eq!(spans.locate(&["apis", "0"]), pos(4, 5));
        assert_eq!(spans.locate(&["apis", "0", "operations", "1"]), pos(8, 9));
        assert_eq!(spans.locate(&["apply", "0"]), pos(9, 9));
        assert_eq!(spans.locate(&["apply", "1"]), pos(9, 15));
        assert_eq!(spans.locate(&["apply", "1", "type"]), pos(9, 17));
    }

    #[test]
    fn a_missing_path_falls_back_to_the_nearest_ancestor() {
        let spans = SpanIndex::build(DOC).unwrap();
        assert_eq!(
            spans.locate(&["apis", "0", "operations", "0", "method"]),
            pos(6, 9)
        );
        assert_eq!(spans.locate(&["nothing", "here"]), pos(1, 1));
        assert_eq!(spans.locate::<&str>(&[]), pos(1, 1));
    }

    #[test]
    fn a_complex_key_does_not_shift_later_entries() {
        let spans = SpanIndex::build("? [a, b]\n: 1\nnext: 2\n").unwrap();
        assert_eq!(spans.locate(&["next"]), pos(3, 1));
    }

    #[test]
    fn a_key_written_twice_is_reported_at_its_second_writing() {
        let spans = SpanIndex::build("a: 1\nb:\n  c: 1\n  c: 2\n").unwrap();
        assert_eq!(
            spans.duplicates(),
            &[DuplicateKey {
                path: vec!["b".into(), "c".into()],
                first: pos(3, 3),
                second: pos(4, 3),
            }]
        );
    }

    #[test]
    fn a_syntax_error_has_a_one_based_position() {
        let err = SpanIndex::build("a: 1\nb: [1, 2\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.pos.column >= 1);
    }
}
