//! The config text as a YAML node tree with source marks, built from yaml-rust2's marked events, with the
//! checks serde cannot make: one document, no duplicate key in any mapping (both locations reported),
//! aliases that expand within a budget, and bounded nesting.
//!
//! Aliases stay references to their anchored node: nothing is copied here, and the budget is checked as each
//! alias is read, so a document that would expand to gigabytes is refused after reading it once.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub(crate) type NodeId = usize;

/// Nodes may nest at most this deep, aliases expanded (a config needs about 6).
pub(crate) const MAX_DEPTH: usize = 64;
/// What a node weighs in the alias budget on top of its text, about what it costs once deserialized.
pub(crate) const NODE_WEIGHT: u64 = 16;
/// Aliases may add at most this many times the file's size in weight ...
pub(crate) const ALIAS_FACTOR: u64 = 8;
/// ... or this much, whichever is larger.
pub(crate) const ALIAS_FLOOR: u64 = 1 << 20;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        Mark { line: m.line(), column: m.col() + 1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// An untagged plain scalar: resolved as null, boolean, number or text (YAML 1.2 core schema).
    Plain,
    /// Quoted, block, or tagged `!!str`: always text.
    Text,
}

#[derive(Debug)]
pub(super) enum Kind {
    Scalar {
        value: String,
        style: Style,
    },
    Seq(Vec<NodeId>),
    /// Entries in file order; of duplicate keys only the first is kept (the others are problems).
    Map(Vec<(NodeId, NodeId)>),
    /// The anchored node this alias names.
    Alias(NodeId),
}

#[derive(Debug)]
pub(super) struct Node {
    pub kind: Kind,
    pub mark: Mark,
}

/// A problem at a place in the file, with the key path of the node (`tenants.acme.tokens[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub mark: Option<Mark>,
    pub path: String,
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct Document {
    nodes: Vec<Node>,
    root: NodeId,
    /// Problems that do not stop reading the document (duplicate keys, unsupported tags).
    pub problems: Vec<Problem>,
}

impl Document {
    /// Parses `text`. The error is a problem that stops reading: a syntax error, a second document, an
    /// alias budget or nesting depth exceeded.
    pub(super) fn parse(text: &str) -> Result<Document, Problem> {
        let budget = ALIAS_FLOOR.max(ALIAS_FACTOR.saturating_mul(text.len() as u64));
        let mut builder = Builder { budget, ..Builder::default() };
        let mut parser = Parser::new_from_str(text);
        let mut documents = 0;
        loop {
            let (event, marker) = parser.next_token().map_err(|e| Problem {
                mark: Some((*e.marker()).into()),
                path: String::new(),
                message: e.info().to_owned(),
            })?;
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(Problem {
                            mark: Some(marker.into()),
                            path: String::new(),
                            message: "the config file holds more than one YAML document".into(),
                        });
                    }
                }
                event => builder.event(event, marker.into())?,
            }
        }
        // An empty file reads as an empty plain value, like a key without a value.
        let root = match builder.root {
            Some(root) => root,
            None => {
                let value = Kind::Scalar { value: String::new(), style: Style::Plain };
                builder.push(value, Mark { line: 1, column: 1 }, NODE_WEIGHT, 1)
            }
        };
        Ok(Document { nodes: builder.nodes, root, problems: builder.problems })
    }

    pub(super) fn root(&self) -> NodeId {
        self.root
    }

    pub(super) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The node itself, or the node an alias names.
    pub(super) fn resolve(&self, id: NodeId) -> NodeId {
        match self.nodes[id].kind {
            Kind::Alias(target) => target,
            _ => id,
        }
    }

    /// A scalar's text (through an alias), as a mapping key reads.
    pub(super) fn scalar(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[self.resolve(id)].kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Every node's key path and mark, for locating errors found after deserialization. Aliases are not
    /// followed: a path inside an aliased node finds the alias (see `Locator::find`).
    pub(super) fn paths(&self) -> HashMap<String, Mark> {
        let mut out = HashMap::new();
        let mut todo = vec![(self.root, String::new())];
        while let Some((id, path)) = todo.pop() {
            let node = &self.nodes[id];
            match &node.kind {
                Kind::Seq(items) => {
                    todo.extend(items.iter().enumerate().map(|(i, &item)| (item, format!("{path}[{i}]"))));
                }
                Kind::Map(entries) => {
                    for &(key, value) in entries {
                        let key = self.scalar(key).unwrap_or("?");
                        todo.push((value, join(&path, key)));
                    }
                }
                Kind::Scalar { .. } | Kind::Alias(_) => {}
            }
            out.entry(path).or_insert(node.mark);
        }
        out
    }
}

/// `parent.key`, or `key` at the top.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

struct Frame {
    id: NodeId,
    path: String,
    /// A mapping's key waiting for its value.
    key: Option<NodeId>,
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    /// Per node: weight with aliases expanded, height, and whether it is complete.
    weight: Vec<u64>,
    height: Vec<usize>,
    done: Vec<bool>,
    anchors: HashMap<usize, NodeId>,
    stack: Vec<Frame>,
    root: Option<NodeId>,
    problems: Vec<Problem>,
    /// Weight the aliases read so far add, and the most they may add.
    expanded: u64,
    budget: u64,
}

impl Builder {
    fn event(&mut self, event: Event, mark: Mark) -> Result<(), Problem> {
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                let style = match (style, tag) {
                    (_, Some(tag)) => self.scalar_tag(&tag, mark),
                    (TScalarStyle::Plain, None) => Style::Plain,
                    (_, None) => Style::Text,
                };
                let weight = value.len() as u64 + NODE_WEIGHT;
                self.check_depth(1, mark)?;
                let id = self.push(Kind::Scalar { value, style }, mark, weight, 1);
                self.anchor(anchor, id);
                self.attach(id, mark);
            }
            Event::Alias(anchor) => {
                let target = *self.anchors.get(&anchor).ok_or_else(|| self.fatal(mark, "an alias names no anchor"))?;
                if !self.done[target] {
                    return Err(self.fatal(mark, "an alias names a node that contains it"));
                }
                let (weight, height) = (self.weight[target], self.height[target]);
                self.check_depth(height, mark)?;
                self.expanded = self.expanded.saturating_add(weight);
                if self.expanded > self.budget {
                    let message = format!(
                        "aliases expand to more than {} bytes (at most {ALIAS_FACTOR} times the file's size or {} MiB, counting {NODE_WEIGHT} bytes per node)",
                        self.budget,
                        ALIAS_FLOOR >> 20
                    );
                    return Err(self.fatal(mark, &message));
                }
                let id = self.push(Kind::Alias(target), mark, weight, height);
                self.attach(id, mark);
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                let is_map = matches!(event, Event::MappingStart(..));
                if let Some(tag) = tag {
                    let expected = if is_map { "map" } else { "seq" };
                    let tag = tag.clone();
                    if !(tag.handle == "tag:yaml.org,2002:" && tag.suffix == expected) {
                        self.unsupported_tag(&tag, mark);
                    }
                }
                self.check_depth(1, mark)?;
                let path = self.child_path();
                let kind = if is_map { Kind::Map(Vec::new()) } else { Kind::Seq(Vec::new()) };
                let id = self.push(kind, mark, NODE_WEIGHT, 1);
                self.anchor(anchor, id);
                self.attach(id, mark);
                self.stack.push(Frame { id, path, key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self.stack.pop().expect("the parser balances collections");
                self.finish(frame);
            }
            Event::StreamStart | Event::DocumentEnd | Event::Nothing | Event::StreamEnd | Event::DocumentStart => {}
        }
        Ok(())
    }

    fn push(&mut self, kind: Kind, mark: Mark, weight: u64, height: usize) -> NodeId {
        let done = !matches!(kind, Kind::Seq(_) | Kind::Map(_));
        self.nodes.push(Node { kind, mark });
        self.weight.push(weight);
        self.height.push(height);
        self.done.push(done);
        self.nodes.len() - 1
    }

    fn anchor(&mut self, anchor: usize, id: NodeId) {
        if anchor != 0 {
            self.anchors.insert(anchor, id);
        }
    }

    fn check_depth(&self, height: usize, mark: Mark) -> Result<(), Problem> {
        if self.stack.len() + height > MAX_DEPTH {
            return Err(self.fatal(mark, &format!("nodes nest more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn fatal(&self, mark: Mark, message: &str) -> Problem {
        Problem { mark: Some(mark), path: self.child_path(), message: message.to_owned() }
    }

    /// The key path of the node about to be attached.
    fn child_path(&self) -> String {
        let Some(frame) = self.stack.last() else { return String::new() };
        match &self.nodes[frame.id].kind {
            Kind::Seq(items) => format!("{}[{}]", frame.path, items.len()),
            _ => match frame.key {
                Some(key) => join(&frame.path, self.key_text(key)),
                // The node is itself a key.
                None => frame.path.clone(),
            },
        }
    }

    fn key_text(&self, key: NodeId) -> &str {
        let key = match self.nodes[key].kind {
            Kind::Alias(target) => target,
            _ => key,
        };
        match &self.nodes[key].kind {
            Kind::Scalar { value, .. } => value,
            _ => "?",
        }
    }

    fn scalar_tag(&mut self, tag: &Tag, mark: Mark) -> Style {
        match (tag.handle.as_str(), tag.suffix.as_str()) {
            ("tag:yaml.org,2002:", "str") | ("", "!") => Style::Text,
            ("tag:yaml.org,2002:", "int" | "bool" | "null" | "float") => Style::Plain,
            _ => {
                self.unsupported_tag(tag, mark);
                Style::Text
            }
        }
    }

    fn unsupported_tag(&mut self, tag: &Tag, mark: Mark) {
        let shown = match tag.handle.strip_prefix("tag:yaml.org,2002:") {
            Some(_) => format!("!!{}", tag.suffix),
            None => format!("{}{}", tag.handle, tag.suffix),
        };
        let message = format!("the tag `{shown}` is not supported (write plain values)");
        self.problems.push(Problem { mark: Some(mark), path: self.child_path(), message });
    }

    /// Hangs a new node on its parent (or makes it the root).
    fn attach(&mut self, id: NodeId, mark: Mark) {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(id);
            return;
        };
        let parent = frame.id;
        match &mut self.nodes[parent].kind {
            Kind::Seq(items) => items.push(id),
            Kind::Map(entries) => match frame.key.take() {
                Some(key) => entries.push((key, id)),
                None => {
                    // A block mapping's start mark sits after its first key: the mapping starts at that key.
                    if entries.is_empty() && mark < self.nodes[parent].mark {
                        self.nodes[parent].mark = mark;
                    }
                    frame.key = Some(id);
                }
            },
            _ => unreachable!("only collections are frames"),
        }
    }

    /// A collection is complete: its weight, its height, and (for a mapping) its duplicate keys.
    fn finish(&mut self, frame: Frame) {
        let children: Vec<NodeId> = match &self.nodes[frame.id].kind {
            Kind::Seq(items) => items.clone(),
            Kind::Map(entries) => entries.iter().flat_map(|&(k, v)| [k, v]).collect(),
            _ => unreachable!("only collections are frames"),
        };
        let weight = children.iter().fold(NODE_WEIGHT, |sum, &c| sum.saturating_add(self.weight[c]));
        let height = 1 + children.iter().map(|&c| self.height[c]).max().unwrap_or(0);
        self.weight[frame.id] = weight;
        self.height[frame.id] = height;
        self.done[frame.id] = true;
        if let Kind::Map(entries) = &self.nodes[frame.id].kind {
            let mut first: HashMap<&str, Mark> = HashMap::new();
            let mut keep = Vec::with_capacity(entries.len());
            let mut problems = Vec::new();
            for &(key, value) in entries {
                let mark = self.nodes[key].mark;
                let text = self.key_text(key);
                match first.get(text) {
                    Some(at) if text != "?" => problems.push(Problem {
                        mark: Some(mark),
                        path: join(&frame.path, text),
                        message: format!("duplicate key `{text}` (first at line {}, column {})", at.line, at.column),
                    }),
                    _ => {
                        first.entry(text).or_insert(mark);
                        keep.push((key, value));
                    }
                }
            }
            if !problems.is_empty() {
                self.problems.extend(problems);
                self.nodes[frame.id].kind = Kind::Map(keep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Problem {
        match Document::parse(text) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    fn problems(text: &str) -> Vec<String> {
        let doc = Document::parse(text).unwrap();
        doc.problems
            .iter()
            .map(|p| format!("{:?} {}: {}", p.mark.map(|m| (m.line, m.column)), p.path, p.message))
            .collect()
    }

    #[test]
    fn duplicate_keys_at_any_depth_name_both_places() {
        let text = "a: 1\nb:\n  x: [1, 2]\n  y: {p: 1, p: 2}\n  x: 3\na: 2\n";
        assert_eq!(
            problems(text),
            vec![
                "Some((4, 13)) b.y.p: duplicate key `p` (first at line 4, column 7)",
                "Some((5, 3)) b.x: duplicate key `x` (first at line 3, column 3)",
                "Some((6, 1)) a: duplicate key `a` (first at line 1, column 1)",
            ]
        );
        // The first of the duplicates is kept.
        let doc = Document::parse(text).unwrap();
        let Kind::Map(entries) = &doc.node(doc.root()).kind else { panic!() };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn aliases_expand_within_a_budget() {
        // Shared content is fine ...
        let ok = "base: &b {limit: 1, per: 30s}\nx: [*b, *b, *b]\n";
        assert!(Document::parse(ok).unwrap().problems.is_empty());
        // ... a scalar of 512 KiB repeated is not, and nested aliases multiply.
        let big = format!("a: &a {}\nb: [{}]\n", "x".repeat(512 << 10), vec!["*a"; 20].join(", "));
        let e = refused(&big);
        assert!(e.message.starts_with("aliases expand to more than"), "{e:?}");
        // Eight copies of the file's size fit; the ninth is refused.
        assert_eq!((e.mark.unwrap().line, e.path.as_str()), (2, "b[8]"));
        let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..12 {
            let refs = vec![format!("*l{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        let e = refused(&laughs);
        assert!(e.message.starts_with("aliases expand to more than"), "{e:?}");
    }

    #[test]
    fn nesting_is_bounded_also_through_aliases() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(refused(&deep).message.contains("levels deep"));
        let half = MAX_DEPTH / 2 + 1;
        let aliased =
            format!("a: &a {}{}\nb: {}*a{}\n", "[".repeat(half), "]".repeat(half), "[".repeat(half), "]".repeat(half));
        assert!(refused(&aliased).message.contains("levels deep"));
    }

    #[test]
    fn one_document_and_plain_values_only() {
        assert!(refused("a: 1\n---\nb: 2\n").message.contains("more than one"));
        assert_eq!(
            problems("a: !secret x\n"),
            vec!["Some((1, 12)) a: the tag `!secret` is not supported (write plain values)"]
        );
        assert!(problems("a: !!str 5\nb: !!map {c: 1}\n").is_empty());
        let doc = Document::parse("").unwrap();
        assert!(matches!(&doc.node(doc.root()).kind, Kind::Scalar { value, style: Style::Plain } if value.is_empty()));
    }

    #[test]
    fn paths_locate_every_node() {
        let doc = Document::parse("server:\n  listen: x\nlist:\n  - { a: 1 }\n").unwrap();
        let paths = doc.paths();
        assert_eq!(paths["server.listen"], Mark { line: 2, column: 11 });
        assert_eq!(paths["server"], Mark { line: 2, column: 3 });
        assert_eq!(paths["list[0].a"], Mark { line: 4, column: 10 });
    }
}
