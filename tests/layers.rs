//! The code's layers, checked: every `crate::` and `super::` path in `src/` (imports, re-exports followed to
//! the child they come from, and paths written inline, test modules included) goes to the same or a lower
//! layer; no two files import each other, however indirectly, a child and its folder's `mod.rs` included;
//! and outside `src/providers/`, only the files of [`NAMES_A_PROVIDER`] name a provider's own module.
//! [`LAYERS`] is the one place the layers are written; docs/architecture.md describes them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules of `src/`, lowest layer first. A module may import from its own layer and the ones
/// before it; a file inside a module belongs to its module's layer.
const LAYERS: &[(&str, &[&str])] = &[
    // What every layer speaks: one send and what became of it, errors, numbers, time, files, log fields.
    ("vocabulary", &["clock", "error", "files", "json", "logfields", "phone", "sms"]),
    // gateway.yaml, read and compiled into inert data.
    ("data", &["config"]),
    // Outbound HTTP for providers and the relay; per-tenant work lanes.
    ("infra", &["lanes", "net"]),
    // The parts a send goes through, each owning its runtime type.
    ("components", &["dedupe", "feedback", "policy", "protection", "providers", "relay", "script"]),
    // Config -> running pieces, and the stages in order.
    ("assembly", &["pipeline", "runtime"]),
    // What faces the outside: front doors, the server, explain, metrics.
    ("edges", &["explain", "metrics", "server"]),
];

/// Outside `src/providers/`, the files that may name a provider's own module: the Tencent-compatible door (its
/// API is Tencent's by nature, wherever the door's file sits) and the batch send it alone uses (a SendSms
/// with many numbers, answered entry by entry). Everything else goes through `providers::Providers` and the
/// provider-neutral types beside it.
const NAMES_A_PROVIDER: &[&str] = &["tencent_api.rs", "pipeline/batch.rs"];

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `a::b`; `src/lib.rs` -> `` (the crate root).
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and string literals (a doc comment may name a path of a higher layer).
fn code_only(source: &str) -> String {
    let (mut out, bytes, mut i) = (String::with_capacity(source.len()), source.as_bytes(), 0);
    while i < bytes.len() {
        if source[i..].starts_with("//") {
            i += source[i..].find('\n').unwrap_or(source.len() - i);
        } else if source[i..].starts_with("/*") {
            i += source[i..].find("*/").map_or(source.len() - i, |e| e + 2);
        } else if source[i..].starts_with("r#\"") || source[i..].starts_with("r\"") {
            let hashes = source[i + 1..].bytes().take_while(|&b| b == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            i = start + source[start..].find(&close).map_or(source.len() - start, |e| e + close.len());
            out.push_str("\"\"");
        } else if bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\'') {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = source[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path a `use` tree names, expanded: `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand_tree(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            for item in tree.split(',') {
                let item = item.split(" as ").next().unwrap().trim();
                if !item.is_empty() {
                    out.push(join(prefix, item));
                }
            }
        }
        Some(open) => {
            let head = tree[..open].trim().trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap()];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand_tree(&join(prefix, head), &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand_tree(&join(prefix, head), &inner[start..], out);
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

/// The paths a file names, as written (`crate::x::y`, `super::z`, `self::w`).
fn paths_in(code: &str) -> Vec<String> {
    // A file's test module (`mod tests {`, at its end) is one level down: its `super` is the file itself.
    let code = match code.find("mod tests {") {
        Some(at) => {
            let tail =
                code[at..].replace("super::super::", "\u{1}").replace("super::", "self::").replace('\u{1}', "super::");
            format!("{}{tail}", &code[..at])
        }
        None => code.to_owned(),
    };
    let code = code.as_str();
    let mut paths = Vec::new();
    // `use` trees first, whole (they may span lines and nest braces); then what is left, inline.
    let mut rest = String::with_capacity(code.len());
    let mut cursor = 0;
    for (at, _) in code.match_indices("use ") {
        if at < cursor || (at > 0 && code.as_bytes()[at - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let Some(end) = code[at..].find(';') else { continue };
        rest.push_str(&code[cursor..at]);
        expand_tree("", &code[at + 4..at + end], &mut paths);
        cursor = at + end + 1;
    }
    rest.push_str(&code[cursor..]);
    for root in ["crate::", "super::"] {
        for (at, _) in rest.match_indices(root) {
            if at > 0 && (rest.as_bytes()[at - 1].is_ascii_alphanumeric() || rest.as_bytes()[at - 1] == b'_') {
                continue;
            }
            if rest[..at].ends_with("(in ") {
                continue; // a visibility, `pub(in crate::server)`, not a use
            }
            let tail: String =
                rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(tail.trim_end_matches(':').to_owned());
        }
    }
    paths
}

/// The module a path written in module `from` lands in: the longest prefix that is a module of the crate,
/// followed through a folder's re-export (`pub use client::TencentClient` in `tencent/mod.rs` sends
/// `tencent::TencentClient` on to `tencent::client`). A path that starts with a child module of `from` is
/// relative to `from`.
fn resolve(path: &str, from: &str, crate_: &Crate) -> Option<String> {
    let mut base: Vec<&str> = if from.is_empty() { vec![] } else { from.split("::").collect() };
    let mut rest: Vec<&str> = path.split("::").collect();
    match rest[0] {
        "crate" => {
            base.clear();
            rest.remove(0);
        }
        "super" => {
            // A file's module is `a::b` for `a/b.rs` and `a` for `a/mod.rs`: `super` is its parent either way.
            base.pop();
            rest.remove(0);
            while rest.first() == Some(&"super") {
                base.pop();
                rest.remove(0);
            }
        }
        "self" => {
            rest.remove(0);
        }
        first if crate_.modules.contains(&join(from, first)) => {}
        _ => return None, // an external crate, std, or a name in scope
    }
    let full: Vec<&str> = base.into_iter().chain(rest).collect();
    let n = (0..=full.len()).rev().find(|&n| crate_.modules.contains(&full[..n].join("::")))?;
    let module = full[..n].join("::");
    let reexport = |name: &str| crate_.reexports.get(&(module.clone(), name.to_owned()));
    match full.get(n).and_then(|name| reexport(name).or_else(|| reexport("*"))) {
        Some(child) if *child != module => Some(child.clone()),
        _ => Some(module),
    }
}

/// The crate's modules, and the names folders re-export from their children: (folder, name) -> child.
struct Crate {
    modules: BTreeSet<String>,
    reexports: BTreeMap<(String, String), String>,
}

#[test]
fn modules_import_only_from_their_own_or_lower_layers_and_no_file_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs") && !f.starts_with(src.join("bin")));
    let module = |f: &Path| module_of(f.strip_prefix(&src).unwrap());
    let modules: BTreeSet<String> = files.iter().map(|f| module(f)).collect();
    let mut reexports = BTreeMap::new();
    for file in files.iter().filter(|f| f.ends_with("mod.rs")) {
        let folder = module(file);
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        // Statements, not lines: a `pub use` tree may span several.
        for statement in code.split(';').map(str::trim).filter(|s| s.starts_with("pub") && s.contains(" use ")) {
            let mut paths = Vec::new();
            expand_tree("", statement.split(" use ").nth(1).unwrap(), &mut paths);
            for path in paths {
                let path = path.strip_prefix("self::").unwrap_or(&path);
                let (child, name) = (path.split("::").next().unwrap(), path.rsplit("::").next().unwrap());
                if modules.contains(&join(&folder, child)) {
                    reexports.insert((folder.clone(), name.to_owned()), join(&folder, child));
                }
            }
        }
    }
    let crate_ = Crate { modules, reexports };
    let layer_of = |m: &str| -> Option<(usize, &str)> {
        let top = m.split("::").next().unwrap();
        LAYERS.iter().enumerate().find(|(_, (_, ms))| ms.contains(&top)).map(|(i, (name, _))| (i, *name))
    };

    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module(file);
        if from.is_empty() {
            continue; // lib.rs declares the modules and re-exports the public face
        }
        let Some((from_layer, from_name)) = layer_of(&from) else {
            problems.push(format!("src/{}: module `{from}` is in no layer of tests/layers.rs", rel(&src, file)));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for path in paths_in(&code) {
            let Some(to) = resolve(&path, &from, &crate_) else { continue };
            if to.is_empty() || to == from {
                continue; // the crate root (lib.rs declares the modules), or itself
            }
            let Some((to_layer, to_name)) = layer_of(&to) else { continue };
            if to_layer > from_layer {
                problems.push(format!(
                    "src/{}: `{path}` goes up from {from_name} ({from}) to {to_name} ({to})",
                    rel(&src, file)
                ));
            }
            graph.entry(from.clone()).or_default().insert(to);
        }
    }
    for file in &files {
        let relative = rel(&src, file);
        if relative.starts_with("providers/") || NAMES_A_PROVIDER.iter().any(|a| relative.ends_with(a)) {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for path in paths_in(&code) {
            if let Some(to) = resolve(&path, &module(file), &crate_) {
                if to.starts_with("providers::") {
                    problems.push(format!("src/{relative}: `{path}` names a provider's own module"));
                }
            }
        }
    }
    // Between files, and between top-level modules (a path to a folder's re-export lands on its `mod.rs`).
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &graph {
        let top = |m: &str| m.split("::").next().unwrap().to_owned();
        tops.entry(top(from)).or_default().extend(tos.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    for cycle in cycles(&graph).into_iter().chain(cycles(&tops)) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(problems.is_empty(), "{} layer problems:\n{}", problems.len(), problems.join("\n"));
}

fn rel(src: &Path, file: &Path) -> String {
    file.strip_prefix(src).unwrap().display().to_string()
}

/// One cycle per strongly connected component of more than one module (Tarjan), each closed on itself.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().rposition(|x| *x == v).unwrap();
            let component: Vec<String> = s.stack.drain(at..).map(str::to_owned).collect();
            if component.len() > 1 {
                let mut cycle = component;
                cycle.sort();
                cycle.push(cycle[0].clone());
                s.found.push(cycle);
            }
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The checker catches what it is for: an upward import, a cycle, a module left out of the table.
#[test]
fn the_layer_checker_sees_use_trees_super_paths_and_cycles() {
    let mut paths = Vec::new();
    expand_tree("", "crate::{a::{b, c as d}, e}", &mut paths);
    assert_eq!(paths, ["crate::a::b", "crate::a::c", "crate::e"]);
    let code = code_only("use crate::x; // crate::hidden\nfn f() { crate::y::z(); let s = \"crate::no\"; }");
    assert_eq!(paths_in(&code), ["crate::x", "crate::y::z"]);
    assert!(paths_in(&code_only("pub(in crate::server) fn f() {}")).is_empty(), "a visibility is no use");
    let code = code_only("use super::a;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::b;\n}\n");
    assert_eq!(paths_in(&code), ["super::a", "self::*", "super::b"], "a test module is one level down");
    let modules: BTreeSet<String> = ["a", "a::b", "a::x", "c"].map(String::from).into();
    let reexports = [(("a".to_owned(), "T".to_owned()), "a::b".to_owned())].into();
    let crate_ = Crate { modules, reexports };
    assert_eq!(resolve("super::b::f", "a::x", &crate_).as_deref(), Some("a::b"));
    assert_eq!(resolve("super::c", "a", &crate_).as_deref(), Some("c"));
    assert_eq!(resolve("crate::a::b::T", "c", &crate_).as_deref(), Some("a::b"));
    assert_eq!(resolve("crate::a::T", "c", &crate_).as_deref(), Some("a::b"), "through the re-export");
    assert_eq!(resolve("super::T", "a::x", &crate_).as_deref(), Some("a::b"));
    assert_eq!(resolve("b::f", "a", &crate_).as_deref(), Some("a::b"), "relative to a child");
    assert_eq!(resolve("std::sync", "c", &crate_), None);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
        ("d".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(cycles(&graph), [["a", "b", "c", "a"]]);
}
