//! Maps config key paths (`tenants.acme.limits[2].per`) to their line and column in the YAML source, so that
//! every error `compile()` finds after deserialization still points at the line to fix.

use super::yaml::{Document, Mark};
use std::collections::HashMap;

pub(crate) struct Locator {
    nodes: HashMap<String, Mark>,
}

impl Locator {
    /// Indexes every node of `doc` by its key path.
    pub(super) fn new(doc: &Document) -> Self {
        Locator { nodes: doc.paths() }
    }

    /// Where the node at `path` starts; for a path that is not in the file (a missing key, or a node inside an
    /// aliased one), where its nearest present ancestor starts.
    pub(super) fn find(&self, path: &str) -> Option<Mark> {
        let mut path = path;
        loop {
            if let Some(mark) = self.nodes.get(path) {
                return Some(*mark);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let src = "server:\n  listen: 1.2.3.4:5\ntenants:\n  acme:\n    limits:\n      - { name: a, per: 30s }\n      - name: b\n        per: 1x\n";
        let l = Locator::new(&Document::parse(src).unwrap());
        let at = |line, column| Some(Mark { line, column });
        assert_eq!(l.find("server.listen"), at(2, 11));
        assert_eq!(l.find("tenants.acme.limits[0].per"), at(6, 25));
        assert_eq!(l.find("tenants.acme.limits[1].per"), at(8, 14));
        // A missing key falls back to its parent.
        assert_eq!(l.find("tenants.acme.limits[1].limit"), at(7, 9));
    }
}
