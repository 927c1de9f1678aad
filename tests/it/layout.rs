//! The source tree's architecture, checked: every `crate::` and `super::`
//! path in `src/` points down the layers that `src/lib.rs` lists, no two
//! modules import each other (directly or round a loop), and every module
//! outside the lean layers is behind a cargo feature, so that a serving
//! crate built with `default-features = false` compiles none of the data,
//! training, evaluation or server code.
//!
//! Paths are read from the source text (comments and string literals
//! removed), so a doc link or an error message never counts as an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use its own layer's modules and
/// those of lower layers, never a higher one.
const LAYERS: &[&[&str]] = &[
    &["error", "atomic"],
    &["config"],
    &["preprocess", "policy"],
    &["model"],
    &["scoring", "api"],
    &["data"],
    &["evaluation"],
    &["offline"],
    &["train"],
    &["experiment", "serve"],
];

/// Layers up to this one form the lean build (the Scorer and what it needs).
const LEAN_LAYERS: usize = 5;

type Module = Vec<String>;

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("src/{top}: not in the layer table of tests/it/layout.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`, `src/lib.rs` the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source without comments, string and char literals, and without its
/// `#[cfg(test)]` module (tests may reach anywhere).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if bytes.get(i + 1) == Some(&b'#') || bytes.get(i + 1) == Some(&b'"') => {
                // A raw string r"..." or r#"..."#, unless `r` ends an identifier.
                let ident = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
                let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
                if ident || bytes.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let end = format!("\"{}", "#".repeat(hashes));
                let body = i + 2 + hashes;
                i = body + text[body..].find(&end).unwrap() + end.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || bytes.get(i + 1) == Some(&b'\\') => {
                // A char literal ('x' or '\n'); a lifetime has no closing quote.
                i += 1;
                while bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            _ => {
                let c = text[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Every path that starts at `crate::` or `super::`, with `{...}` groups
/// expanded: `use crate::{a::B, c}` gives `crate::a::B` and `crate::c`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            expand(&code[at..], &mut Vec::new(), &mut found);
        }
    }
    found
}

/// Reads one path at the start of `s` (after `prefix`), expanding groups.
fn expand(s: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut segments = Vec::new();
    loop {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            segments.push(s[start..i].to_string());
        }
        if s[i..].starts_with("::{") {
            i += 3;
            let depth = prefix.len();
            prefix.append(&mut segments);
            loop {
                while bytes[i].is_ascii_whitespace() || bytes[i] == b',' {
                    i += 1;
                }
                if bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                i += expand(&s[i..], prefix, out);
            }
            prefix.truncate(depth);
            return i;
        }
        if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        break;
    }
    // Skip `as name` and generics up to the end of this item.
    let mut path = prefix.clone();
    path.extend(segments);
    if !path.is_empty() {
        out.push(path);
    }
    while i < bytes.len() && !matches!(bytes[i], b',' | b'}' | b';' | b'(' | b')' | b'\n') {
        i += 1;
    }
    i
}

struct Tree {
    /// Every module, with the names its file re-exports (`pub use x::Y`)
    /// and the module each comes from.
    modules: BTreeMap<Module, BTreeMap<String, Module>>,
}

impl Tree {
    /// The module a path names: the longest prefix that is a module, then,
    /// if the next segment is re-exported there, the module it comes from.
    fn resolve(&self, here: &Module, path: &[String]) -> Module {
        let mut module: Module = match path[0].as_str() {
            "crate" => Vec::new(),
            _ => here[..here.len().saturating_sub(1)].to_vec(),
        };
        let mut rest = &path[1..];
        while let Some(next) = rest.first() {
            if next == "super" {
                module.pop();
            } else {
                let mut child = module.clone();
                child.push(next.clone());
                if !self.modules.contains_key(&child) {
                    break;
                }
                module = child;
            }
            rest = &rest[1..];
        }
        match rest
            .first()
            .and_then(|name| self.modules[&module].get(name))
        {
            Some(source) => source.clone(),
            None => module,
        }
    }
}

fn load() -> (Tree, BTreeMap<Module, BTreeSet<Module>>, String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let mut code = BTreeMap::new();
    let mut tree = Tree {
        modules: BTreeMap::new(),
    };
    for file in &files {
        let module = module_of(&src, file);
        code.insert(
            module.clone(),
            code_of(&std::fs::read_to_string(file).unwrap()),
        );
        tree.modules.insert(module, BTreeMap::new());
    }
    // Re-exports: `pub use a::b::{C, D}` in module M maps C and D to the
    // module `a::b` names, relative to M (or to the root with `crate::`).
    for (module, text) in &code {
        let mut exports = BTreeMap::new();
        for (at, _) in text.match_indices("pub use ") {
            let body = &text[at + "pub use ".len()..];
            let body = &body[..=body.find(';').unwrap()];
            let absolute = body.starts_with("crate::") || body.starts_with("super::");
            let written = if absolute {
                body.to_string()
            } else {
                format!("self::{body}")
            };
            for path in paths(&written.replace("self::", "crate::SELF::")) {
                let mut full = vec!["crate".to_string()];
                if path.get(1).is_some_and(|s| s == "SELF") {
                    full.extend(module.iter().cloned());
                    full.extend(path[2..].iter().cloned());
                } else {
                    full = path.clone();
                }
                let name = full.last().unwrap().clone();
                let mut source = full[..full.len() - 1].to_vec();
                source[0] = "crate".into();
                let target = tree.resolve(module, &source);
                if &target != module {
                    exports.insert(name, target);
                }
            }
        }
        tree.modules.insert(module.clone(), exports);
    }
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in &code {
        let targets = edges.entry(module.clone()).or_default();
        for path in paths(text) {
            let target = tree.resolve(module, &path);
            if &target != module && !target.is_empty() {
                targets.insert(target);
            }
        }
        // A module names its own children without a prefix (`use child::X`).
        let children = tree
            .modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module));
        for child in children {
            let name = format!("{}::", child.last().unwrap());
            let named = text.match_indices(&name).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if named {
                targets.insert(child.clone());
            }
        }
    }
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    (tree, edges, lib)
}

fn name(module: &Module) -> String {
    module.join("::")
}

#[test]
fn every_import_points_down_the_layers() {
    let (_, edges, _) = load();
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        let Some(top) = from.first() else { continue };
        for to in targets {
            if layer(&to[0]) > layer(top) {
                upward.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers of tests/it/layout.rs:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let (_, edges, _) = load();
    // Depth-first search; a grey node met again closes a cycle.
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, bool>,
        stack: &mut Vec<Module>,
        cycles: &mut Vec<String>,
    ) {
        match state.get(node) {
            Some(true) => return,
            Some(false) => {
                let at = stack.iter().position(|m| m == node).unwrap();
                let mut cycle: Vec<String> = stack[at..].iter().map(name).collect();
                cycle.push(name(node));
                cycles.push(cycle.join(" -> "));
                return;
            }
            None => {}
        }
        state.insert(node.clone(), false);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, state, stack, cycles);
        }
        stack.pop();
        state.insert(node.clone(), true);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in edges.keys() {
        visit(node, &edges, &mut state, &mut Vec::new(), &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_lean_build_leaves_out_every_layer_above_scoring() {
    let (tree, _, lib) = load();
    let lines: Vec<&str> = lib.lines().collect();
    let tops: BTreeSet<&str> = tree
        .modules
        .keys()
        .filter_map(|m| m.first().map(String::as_str))
        .collect();
    for top in tops {
        let at = lines
            .iter()
            .position(|l| *l == format!("pub mod {top};"))
            .unwrap_or_else(|| panic!("src/lib.rs does not declare `pub mod {top};`"));
        let gated = at > 0 && lines[at - 1].starts_with("#[cfg(feature = ");
        assert_eq!(
            gated,
            layer(top) >= LEAN_LAYERS,
            "src/lib.rs: `{top}` (layer {}) must {}be behind a cargo feature",
            layer(top),
            if gated { "not " } else { "" }
        );
    }
}

/// The checker itself: a path in a comment, a string or a `{...}` group is
/// read as it should be.
#[test]
fn the_checker_reads_paths_as_rust_does() {
    let code = code_of(
        "use crate::{a::B, c::{d, e as f}};\n// crate::x\nlet s = \"crate::y\";\nsuper::g::h();\n",
    );
    let mut found: Vec<String> = paths(&code).iter().map(|p| p.join("::")).collect();
    found.sort();
    assert_eq!(
        found,
        ["crate::a::B", "crate::c::d", "crate::c::e", "super::g::h"]
    );
}
