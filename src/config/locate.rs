//! Maps config key paths (`tenants.acme.limits[2].per`) to their line and column in the YAML source, so that
//! every error `compile()` finds after deserialization still points at the line to fix.
//!
//! serde_yaml reports a location for its own errors only; this walks the document once with yaml-rust2's
//! marked event parser and remembers where each node starts.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Default)]
pub struct Locator {
    nodes: HashMap<String, Location>,
}

impl Locator {
    /// Indexes `source`. A document that does not parse yields an empty index (serde_yaml reports why).
    pub fn new(source: &str) -> Self {
        let mut walker = Walker::default();
        let _ = Parser::new_from_str(source).load(&mut walker, false);
        Locator { nodes: walker.nodes }
    }

    /// Where the node at `path` starts; for a path that is not in the file (a missing key), where its nearest
    /// present ancestor starts.
    pub fn find(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(location) = self.nodes.get(path) {
                return Some(*location);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    /// `fresh` until the first key: a block mapping's start mark sits after its first key, so the mapping's
    /// location is moved to that key.
    Map {
        key: Option<String>,
        fresh: bool,
    },
    Seq {
        index: usize,
    },
}

#[derive(Default)]
struct Walker {
    nodes: HashMap<String, Location>,
    stack: Vec<(String, Frame)>,
    /// Set when a key is the first of its mapping: the mapping's path.
    first_key: Option<String>,
}

impl Walker {
    /// Called for every node start; returns the node's path, or None when the node is a mapping key.
    fn node_path(&mut self, scalar: Option<&str>) -> Option<String> {
        let Some((parent, frame)) = self.stack.last_mut() else {
            return Some(String::new());
        };
        match frame {
            Frame::Seq { index } => {
                let path = format!("{parent}[{index}]");
                *index += 1;
                Some(path)
            }
            Frame::Map { key, fresh } => match key.take() {
                Some(key) if parent.is_empty() => Some(key),
                Some(key) => Some(format!("{parent}.{key}")),
                None => {
                    *key = Some(scalar.unwrap_or("?").to_owned());
                    if std::mem::take(fresh) {
                        self.first_key = Some(parent.clone());
                    }
                    None
                }
            },
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        let location = Location { line: mark.line(), column: mark.col() + 1 };
        self.nodes.entry(path.to_owned()).or_insert(location);
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.node_path(Some(&value)) {
                    self.record(&path, mark);
                } else if let Some(mapping) = self.first_key.take() {
                    let location = Location { line: mark.line(), column: mark.col() + 1 };
                    let recorded = self.nodes.entry(mapping).or_insert(location);
                    if (location.line, location.column) < (recorded.line, recorded.column) {
                        *recorded = location;
                    }
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.node_path(None) {
                    self.record(&path, mark);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.node_path(None).unwrap_or_default();
                self.record(&path, mark);
                let frame = match event {
                    Event::MappingStart(..) => Frame::Map { key: None, fresh: true },
                    _ => Frame::Seq { index: 0 },
                };
                self.stack.push((path, frame));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let src = "server:\n  listen: 1.2.3.4:5\ntenants:\n  acme:\n    limits:\n      - { name: a, per: 30s }\n      - name: b\n        per: 1x\n";
        let l = Locator::new(src);
        assert_eq!(l.find("server.listen"), Some(Location { line: 2, column: 11 }));
        assert_eq!(l.find("tenants.acme.limits[0].per"), Some(Location { line: 6, column: 25 }));
        assert_eq!(l.find("tenants.acme.limits[1].per"), Some(Location { line: 8, column: 14 }));
        // A missing key falls back to its parent.
        assert_eq!(l.find("tenants.acme.limits[1].limit"), Some(Location { line: 7, column: 9 }));
    }
}
