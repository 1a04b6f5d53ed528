//! The import rules of docs/ARCHITECTURE.md, checked against the source text.
//!
//! A connection's data flows one way: listener -> service -> connector ->
//! pump, over a foundation (config, policy, wire, observe, ...) that every
//! layer may use and that uses no layer; `observe` is called from every
//! layer and calls none. That direction is what keeps a mode change inside
//! one service file and the pump free of modes and policy, and nothing in the
//! compiler enforces it: an upward `use` compiles fine and quietly turns the
//! layers back into a knot. So this test reads every file under src/, collects
//! the module paths it names (`crate::`, `super::`, `self::`), and fails if
//!
//! - A: a module names a module of its own layer's rank or above (outside its
//!   own top-level module), or a layer or foundation module names the
//!   application;
//! - B: files, or top-level modules, import each other in a cycle;
//! - C: a layer folder (src/listener, ...) is missing.
//!
//! It reads text rather than asking the compiler, so it needs no crates and
//! runs in milliseconds. The scanner is deliberately simple: it blanks
//! comments, strings and char literals, then tokenises. It does not see
//! paths a macro builds, nor edition-2018 relative paths such as `tcp::serve`
//! in service/mod.rs, so a parent <-> child cycle written that way goes
//! unseen (naming a child from its mod.rs is the usual direction anyway).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

/// Top-level module -> layer rank. Higher ranks sit nearer the client; a
/// module may import only ranks below its own (or its own top-level module).
///
/// - 4..=1 are the layers; each must be a folder with a mod.rs (rule C).
/// - 0 is the foundation: it may import only other foundation modules.
/// - Every top-level module not listed here, and the crate root (lib.rs,
///   main.rs), is the application ([`APPLICATION`]): it may import anything
///   and nothing below it may import it.
///
/// Moving a module between layers, or adding a layer module, is a change to
/// this table and to docs/ARCHITECTURE.md together.
const LAYERS: &[(&str, u8)] = &[
    ("listener", 4),
    ("service", 3),
    ("connector", 2),
    // The storage client: the sftp service's way to the bucket, and the
    // demo's and `check`'s.
    ("s3client", 2),
    ("pump", 1),
    ("acl", 0),
    ("config", 0),
    ("error", 0),
    ("observe", 0),
    ("pattern", 0),
    ("policy", 0),
    ("resolve", 0),
    ("sockopt", 0),
    ("tls", 0),
    ("wire", 0),
];

/// The rank of the crate root and of every top-level module not in [`LAYERS`].
const APPLICATION: u8 = 5;

/// Names a path may start with to mean the library's root: `crate`, and in
/// main.rs the library's own name (the binary reaches it as `ossrelay::`).
/// `$crate` in macros is seen as `crate` because `$` is not part of a name.
const CRATE_ALIASES: &[&str] = &["crate", "ossrelay"];

/// The graph node of the crate root (lib.rs). main.rs is the node `main`, so
/// that the binary's imports do not look like the library importing itself.
const ROOT: &str = "crate";
const BIN_ROOT: &str = "main";

/// Node -> (node it imports -> one place that shows the import). The
/// evidence type is generic so the graph code can be tested with `()`.
type Graph<E> = BTreeMap<String, BTreeMap<String, E>>;

#[test]
fn imports_follow_the_layers() {
    let problems = layer_problems(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")));
    assert!(
        problems.is_empty(),
        "{} layer rule problem(s) under src/ (rules and the LAYERS table: tests/it/layers.rs; \
         why: docs/ARCHITECTURE.md, Invariants):\n  - {}\n",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Every problem with the tree under `src_dir`; empty when all rules hold.
/// It and `load_sources` are the only code here that touches the file system.
fn layer_problems(src_dir: &Path) -> Vec<String> {
    check(&load_sources(src_dir))
}

/// One .rs file under src/.
struct SourceFile {
    /// Path shown in messages, always starting with `src/`.
    rel: String,
    /// Module path without `crate`; empty for lib.rs and main.rs.
    module: Vec<String>,
    text: String,
}

impl SourceFile {
    /// `rel_in_src` is relative to src/, with `/` separators.
    fn new(rel_in_src: &str, text: String) -> SourceFile {
        SourceFile {
            rel: format!("src/{rel_in_src}"),
            module: module_path(rel_in_src),
            text,
        }
    }

    /// Name of this file's node in the file graph.
    fn node(&self) -> String {
        if self.module.is_empty() && self.rel == "src/main.rs" {
            BIN_ROOT.to_string()
        } else {
            module_name(&self.module)
        }
    }

    /// Name of this file's node in the top-level graph.
    fn top(&self) -> String {
        match self.module.first() {
            Some(first) => first.clone(),
            None => self.node(),
        }
    }
}

fn load_sources(src_dir: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut dirs = vec![src_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let rel = path
                    .strip_prefix(src_dir)
                    .expect("the walk stays under src/")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                files.push(SourceFile::new(&rel, text));
            }
        }
    }
    // Sorted so messages come out in the same order on every machine.
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    files
}

/// `lib.rs`/`main.rs` -> root, `a/mod.rs` -> `a`, `a/b.rs` and `a/b/mod.rs`
/// -> `a::b`.
fn module_path(rel_in_src: &str) -> Vec<String> {
    if rel_in_src == "lib.rs" || rel_in_src == "main.rs" {
        return Vec::new();
    }
    let stem = rel_in_src.strip_suffix(".rs").unwrap_or(rel_in_src);
    let mut segments: Vec<String> = stem.split('/').map(str::to_string).collect();
    if segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

fn module_name(module: &[String]) -> String {
    if module.is_empty() {
        ROOT.to_string()
    } else {
        module.join("::")
    }
}

fn rank(top: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == top)
        .map_or(APPLICATION, |&(_, rank)| rank)
}

/// Applies rules A, B and C to a set of files; pure, so the tests can feed
/// it a tree that exists only in memory.
fn check(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();

    // Rule C: the layers are folders. A layer squeezed back into one file
    // is where the next upward import hides.
    for &(name, layer) in LAYERS {
        let mod_rs = format!("src/{name}/mod.rs");
        if (1..APPLICATION).contains(&layer) && !files.iter().any(|f| f.rel == mod_rs) {
            problems.push(format!(
                "missing layer folder src/{name}/ (a directory with a mod.rs)"
            ));
        }
    }

    let known: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut file_graph: Graph<String> = Graph::new();
    let mut top_graph: Graph<String> = Graph::new();
    let mut reported = BTreeSet::new();
    for file in files {
        let from = file.node();
        let from_top = file.top();
        let from_rank = rank(&from_top);
        file_graph.entry(from.clone()).or_default();
        top_graph.entry(from_top.clone()).or_default();
        for path in referenced_paths(&file.text, &file.module, CRATE_ALIASES) {
            let target = owning_module(&path, &known);
            let to = module_name(&target);
            let to_top = target.first().map_or(ROOT, String::as_str);
            let shown = if path.is_empty() {
                ROOT.to_string()
            } else {
                format!("{ROOT}::{}", path.join("::"))
            };
            let evidence = || format!("{} names {shown}", file.rel);
            // Self-edges are a file naming its own items: no cycle in that.
            if to != from {
                let edges = file_graph.entry(from.clone()).or_default();
                edges.entry(to.clone()).or_insert_with(evidence);
            }
            if to_top == from_top {
                // Inside one top-level module anything goes (rule A); only
                // file cycles (above) are checked there.
                continue;
            }
            let edges = top_graph.entry(from_top.clone()).or_default();
            edges.entry(to_top.to_string()).or_insert_with(evidence);

            // Rule A. A layer of rank r may import ranks below r; the
            // foundation (0) only rank 0, hence `max(1)`. The application
            // imports anything. One report per file and target module.
            let to_rank = rank(to_top);
            if from_rank < APPLICATION
                && to_rank >= from_rank.max(1)
                && reported.insert((file.rel.clone(), to))
            {
                problems.push(format!(
                    "{} imports {shown} (layer {to_rank}) from layer {from_rank}",
                    file.rel
                ));
            }
        }
    }

    // Rule B at two grains. The file graph sees cycles inside one top-level
    // module (service::tcp <-> service), which the top-level graph cannot;
    // the top-level graph sees two modules importing each other through
    // different files (a::x -> b::y, b::z -> a::w), which is no file cycle
    // but still ties the two together.
    for (label, graph) in [("cycle", &file_graph), ("top-level cycle", &top_graph)] {
        for members in strongly_connected(graph) {
            let cycle = shortest_cycle(graph, &members);
            let mut lines = vec![format!("{label}: {}", cycle.join(" -> "))];
            lines.extend(
                cycle
                    .windows(2)
                    .map(|hop| graph[hop[0].as_str()][hop[1].as_str()].clone()),
            );
            if members.len() + 1 > cycle.len() {
                lines.push(format!(
                    "(all {} tangled together: {})",
                    members.len(),
                    members.join(", ")
                ));
            }
            problems.push(lines.join("\n      "));
        }
    }
    problems
}

/// The longest prefix of `path` that is a module file; the crate root if
/// none. `service::http::serve` is `service::http` when that file exists,
/// else `service`.
fn owning_module(path: &[String], known: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| &path[..n])
        .find(|prefix| known.contains(*prefix))
        .unwrap_or_default()
        .to_vec()
}

// ---- scanner --------------------------------------------------------------

/// Every path in `src` that starts at the crate root (`crate::`, or an alias
/// in `crate_aliases`) or relative to the module (`self::`, `super::`), made
/// absolute (without the leading `crate`). `module` is the file's module
/// path; inline `mod name { ... }` blocks extend it, so `use super::*` in a
/// file's `mod tests` means the file itself, not its parent.
fn referenced_paths(src: &str, module: &[String], crate_aliases: &[&str]) -> Vec<Vec<String>> {
    let tokens = tokenize(&blank_comments_and_strings(src));
    let mut found = Vec::new();
    let mut scope = module.to_vec();
    // Brace depth, and for each open inline module the depth of its body.
    let mut depth = 0usize;
    let mut inline_bodies: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline_bodies.last() == Some(&depth) {
                    inline_bodies.pop();
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(word) if word == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    depth += 1;
                    inline_bodies.push(depth);
                    scope.push(name.clone());
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(word) if word == "use" => {
                let mut leaves = Vec::new();
                i = parse_use_tree(&tokens, i + 1, Vec::new(), &mut leaves);
                found.extend(
                    leaves
                        .iter()
                        .filter_map(|leaf| absolute(leaf, &scope, crate_aliases)),
                );
                continue;
            }
            Tok::Ident(word)
                if tokens.get(i + 1) == Some(&Tok::PathSep)
                    && (i == 0 || tokens[i - 1] != Tok::PathSep)
                    && !is_visibility_path(&tokens, i) =>
            {
                // An inline path such as `crate::service::http::serve(`:
                // names joined by `::`, up to anything else (`<`, `(`, ...).
                let mut segments = vec![word.clone()];
                let mut j = i + 1;
                while let (Some(Tok::PathSep), Some(Tok::Ident(next))) =
                    (tokens.get(j), tokens.get(j + 1))
                {
                    segments.push(next.clone());
                    j += 2;
                }
                found.extend(absolute(&segments, &scope, crate_aliases));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// `pub(in crate::a)` restricts visibility; it is not an import.
fn is_visibility_path(tokens: &[Tok], i: usize) -> bool {
    i >= 3
        && is_word(tokens.get(i - 1), "in")
        && tokens[i - 2] == Tok::Punct('(')
        && is_word(tokens.get(i - 3), "pub")
}

fn is_word(token: Option<&Tok>, word: &str) -> bool {
    matches!(token, Some(Tok::Ident(name)) if name == word)
}

/// Makes a path as written absolute against `scope`; `None` for paths that
/// do not start in this crate (`std::`, other crates, 2018 relative paths).
fn absolute(segments: &[String], scope: &[String], crate_aliases: &[&str]) -> Option<Vec<String>> {
    let first = segments.first()?;
    let (mut base, rest) = if crate_aliases.contains(&first.as_str()) {
        (Vec::new(), &segments[1..])
    } else if first == "self" {
        (scope.to_vec(), &segments[1..])
    } else if first == "super" {
        let supers = segments.iter().take_while(|s| *s == "super").count();
        let mut base = scope.to_vec();
        for _ in 0..supers {
            // `super` above the crate root: not a path we can place.
            base.pop()?;
        }
        (base, &segments[supers..])
    } else {
        return None;
    };
    // `self` later on is the `a::{self, b}` form: the prefix itself.
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// Parses the use tree starting at `i` (after `use`, or inside `{}`), with
/// `prefix` already consumed, and pushes one path per leaf: `a::{b, c::*}`
/// under `crate` gives `crate::a::b` and `crate::a::c`. Returns the index of
/// the first token after the tree; stops quietly at anything unexpected.
fn parse_use_tree(
    tokens: &[Tok],
    mut i: usize,
    mut prefix: Vec<String>,
    leaves: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i) {
            // `use ::std::x` (a leading `::`), or `a::` before `{`/`*`.
            Some(Tok::PathSep) => i += 1,
            Some(Tok::Punct('*')) => {
                leaves.push(prefix);
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    if tokens.get(i) == Some(&Tok::Punct('}')) {
                        return i + 1;
                    }
                    let next = parse_use_tree(tokens, i, prefix.clone(), leaves);
                    if next == i {
                        return i;
                    }
                    i = next;
                    match tokens.get(i) {
                        Some(Tok::Punct(',')) => i += 1,
                        Some(Tok::Punct('}')) => return i + 1,
                        _ => return i,
                    }
                }
            }
            Some(Tok::Ident(segment)) => {
                prefix.push(segment.clone());
                i += 1;
                if tokens.get(i) == Some(&Tok::PathSep) {
                    continue;
                }
                if is_word(tokens.get(i), "as") {
                    i += 2;
                }
                leaves.push(prefix);
                return i;
            }
            _ => return i,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    /// A name, keyword or number.
    Ident(String),
    /// `::`
    PathSep,
    /// Any other single character.
    Punct(char),
}

/// Splits text already free of comments and strings. Lifetimes come out as
/// `'` then a name, which no rule looks at.
fn tokenize(clean: &str) -> Vec<Tok> {
    let chars: Vec<char> = clean.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_name_char(c) {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            tokens.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Tok::PathSep);
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            tokens.push(Tok::Punct(c));
        }
        i += 1;
    }
    tokens
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Replaces comments (line, doc and nested block), string literals (plain,
/// byte, raw with any number of `#`) and char literals with spaces, keeping
/// line breaks, so `crate::` in prose or in a message is not an import.
fn blank_comments_and_strings(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < chars.len() {
        let end = match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => Some(
                chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |n| i + n),
            ),
            '/' if chars.get(i + 1) == Some(&'*') => Some(block_comment_end(&chars, i)),
            '"' => Some(string_end(&chars, i + 1)),
            'r' => raw_string_end(&chars, i),
            '\'' => char_literal_end(&chars, i),
            _ => None,
        };
        if let Some(end) = end {
            out.extend(
                chars[i..end]
                    .iter()
                    .map(|&c| if c == '\n' { '\n' } else { ' ' }),
            );
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// End (exclusive) of the block comment opening at `start`; they nest.
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// End (exclusive) of a `"` string whose body starts at `i`.
fn string_end(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// If a raw string (`r"`, `r#"`, `br"`, ...) opens at the `r` at `start`,
/// its end (exclusive). An `r` inside a name (`for`, `r#type`) is not one.
fn raw_string_end(chars: &[char], start: usize) -> Option<usize> {
    let before = |n: usize| start.checked_sub(n).map(|p| chars[p]);
    let starts_token = match before(1) {
        None => true,
        Some('b' | 'c') => !before(2).is_some_and(is_name_char),
        Some(c) => !is_name_char(c),
    };
    if !starts_token {
        return None;
    }
    let hashes = chars[start + 1..].iter().take_while(|&&c| c == '#').count();
    let body = start + 1 + hashes + 1;
    if chars.get(body - 1) != Some(&'"') {
        return None;
    }
    let closes_at =
        |i: usize| chars[i] == '"' && (1..=hashes).all(|h| chars.get(i + h) == Some(&'#'));
    Some(
        (body..chars.len())
            .find(|&i| closes_at(i))
            .map_or(chars.len(), |i| i + 1 + hashes),
    )
}

/// If a char literal opens at the `'` at `start` (`'x'`, `'"'`, `'\''`,
/// `'\u{7f}'`), its end (exclusive); `None` for a lifetime or label (`'a`).
fn char_literal_end(chars: &[char], start: usize) -> Option<usize> {
    match chars.get(start + 1) {
        // Skip the escaped char itself, which may be a `'`.
        Some('\\') => Some(
            chars
                .iter()
                .skip(start + 3)
                .position(|&c| c == '\'')
                .map_or(chars.len(), |n| start + 3 + n + 1),
        ),
        Some(_) if chars.get(start + 2) == Some(&'\'') => Some(start + 3),
        _ => None,
    }
}

// ---- graph ----------------------------------------------------------------

/// Strongly connected components with more than one node (Tarjan), each
/// sorted, in a stable order.
fn strongly_connected<E>(graph: &Graph<E>) -> Vec<Vec<String>> {
    struct Tarjan<'g, E> {
        graph: &'g Graph<E>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        components: Vec<Vec<String>>,
    }

    impl<'g, E> Tarjan<'g, E> {
        fn visit(&mut self, v: &'g str) {
            let index = self.index.len();
            self.index.insert(v, index);
            self.low.insert(v, index);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flat_map(BTreeMap::keys) {
                let w = w.as_str();
                let reach = if !self.index.contains_key(w) {
                    self.visit(w);
                    self.low[w]
                } else if self.on_stack.contains(w) {
                    self.index[w]
                } else {
                    continue;
                };
                let low = self.low[v].min(reach);
                self.low.insert(v, low);
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.components.push(component);
                }
            }
        }
    }

    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan.components.sort();
    tarjan.components
}

/// A shortest cycle through the first member of a component, as
/// `[a, b, ..., a]`: one concrete loop to show, since the component may be
/// a tangle of several.
fn shortest_cycle<E>(graph: &Graph<E>, members: &[String]) -> Vec<String> {
    let start = members[0].as_str();
    let inside: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flat_map(BTreeMap::keys) {
            let w = w.as_str();
            if w == start {
                let mut cycle = vec![v];
                let mut at = v;
                while at != start {
                    at = parent[at];
                    cycle.push(at);
                }
                cycle.reverse();
                cycle.push(start);
                return cycle.into_iter().map(str::to_string).collect();
            }
            if inside.contains(w) && !parent.contains_key(w) && w != start {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    // Not reached for a real component; show the members rather than panic.
    members.to_vec()
}

// ---- tests of the checker itself ------------------------------------------

mod tests {
    use super::*;

    /// `""` -> root, `"a::b"` -> `[a, b]`.
    fn segments(path: &str) -> Vec<String> {
        path.split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn paths(src: &str, module: &str) -> Vec<String> {
        referenced_paths(src, &segments(module), CRATE_ALIASES)
            .iter()
            .map(|p| p.join("::"))
            .collect()
    }

    #[test]
    fn comments_are_not_imports() {
        let src = "//! see crate::a\n/// and crate::b\n// crate::c\n\
                   /* crate::d /* nested crate::e */ crate::f */\n\
                   /** crate::g */ fn x() {} // trailing crate::h\ncrate::real::f();";
        assert_eq!(paths(src, ""), ["real::f"]);
    }

    #[test]
    fn strings_and_chars_are_not_imports() {
        let src = r###"
            let a = "crate::a \" crate::b";
            let b = b"crate::c\\";
            let c = r"crate::d";
            let d = r#"crate::e " crate::f"#;
            let e = br##"crate::g "# crate::h"##;
            let q = '"'; let s = '\''; let t = '\\'; let u = '\u{22}';
            fn f<'a>(x: &'a str) -> &'a str { crate::real::g(x) }
        "###;
        assert_eq!(paths(src, ""), ["real::g"]);
    }

    #[test]
    fn grouped_uses_give_every_leaf() {
        let src = "use crate::{a::b, c::{d, e}};\n\
                   use crate::f::{self, g as h, i::*};\n\
                   pub(crate) use crate::{\n    j,\n    k::l,\n};\nuse std::io;";
        assert_eq!(
            paths(src, "x"),
            ["a::b", "c::d", "c::e", "f", "f::g", "f::i", "j", "k::l"]
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_module() {
        assert_eq!(paths("use super::x;", "a::b"), ["a::x"]);
        assert_eq!(paths("use super::super::y::z;", "a::b"), ["y::z"]);
        assert_eq!(paths("let v = self::c::d(1);", "a::b"), ["a::b::c::d"]);
        assert_eq!(paths("super::k::<u8>();", "a::b"), ["a::k"]);
        // In an inline `mod tests`, `super` is the file's own module.
        assert_eq!(
            paths("mod tests { use super::*; }\nuse super::w;", "a::b"),
            ["a::b", "a::w"]
        );
        // The binary reaches the library by name; `$crate` is the crate.
        assert_eq!(
            paths("ossrelay::run(); $crate::m::n!();", ""),
            ["run", "m::n"]
        );
        assert!(paths("pub(crate) fn f() {} pub(in crate::a) fn g() {}", "a::b").is_empty());
        assert!(paths("use super::x;", "").is_empty());
    }

    #[test]
    fn paths_land_on_the_longest_module_file() {
        let known: BTreeSet<Vec<String>> = ["", "service", "service::http"]
            .into_iter()
            .map(segments)
            .collect();
        let owner = |path: &str| module_name(&owning_module(&segments(path), &known));
        assert_eq!(owner("service::http::serve"), "service::http");
        assert_eq!(owner("service::tcp::relay"), "service");
        assert_eq!(owner("Error"), ROOT);
    }

    #[test]
    fn module_paths_follow_the_file_layout() {
        assert!(module_path("lib.rs").is_empty());
        assert!(module_path("main.rs").is_empty());
        assert_eq!(module_path("a/mod.rs"), ["a"]);
        assert_eq!(module_path("a/b.rs"), ["a", "b"]);
        assert_eq!(module_path("a/b/mod.rs"), ["a", "b"]);
    }

    fn graph(edges: &[(&str, &str)]) -> Graph<()> {
        let mut graph = Graph::new();
        for &(from, to) in edges {
            graph.entry(to.to_string()).or_default();
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string(), ());
        }
        graph
    }

    #[test]
    fn cycles_are_found_and_dags_pass() {
        let cyclic = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
        let components = strongly_connected(&cyclic);
        assert_eq!(components, [["a", "b", "c"]]);
        assert_eq!(
            shortest_cycle(&cyclic, &components[0]),
            ["a", "b", "c", "a"]
        );
        let acyclic = graph(&[("a", "b"), ("b", "c"), ("a", "c")]);
        assert!(strongly_connected(&acyclic).is_empty());
    }

    fn tree(files: &[(&str, &str)]) -> Vec<SourceFile> {
        files
            .iter()
            .map(|&(rel, text)| SourceFile::new(rel, text.to_string()))
            .collect()
    }

    /// Every layer folder, each importing only downwards.
    const GOOD: &[(&str, &str)] = &[
        (
            "lib.rs",
            "pub mod listener; pub mod service; pub use error::Error;",
        ),
        ("main.rs", "use ossrelay::listener::Bound; fn main() {}"),
        (
            "listener/mod.rs",
            "use crate::service::serve; use crate::observe::log;",
        ),
        (
            "service/mod.rs",
            "pub mod tcp; use crate::connector::Connector;",
        ),
        (
            "service/tcp.rs",
            "use super::Context; crate::pump::copy::run();",
        ),
        (
            "connector/mod.rs",
            "use crate::{pump::copy, config::Config};",
        ),
        ("pump/mod.rs", "pub mod copy;"),
        ("pump/copy.rs", "use crate::observe::{log, stats};"),
        ("s3client/mod.rs", "use crate::pump::copy;"),
        ("config.rs", "use crate::error::Error;"),
        ("error.rs", "// crate::service is only mentioned here"),
        ("observe.rs", ""),
        (
            "server.rs",
            "use crate::listener::Bound; use crate::config::Config;",
        ),
    ];

    #[test]
    fn a_layered_tree_passes() {
        assert_eq!(check(&tree(GOOD)), Vec::<String>::new());
    }

    #[test]
    fn upward_imports_cycles_and_missing_layers_fail() {
        // pump loses its mod.rs and imports a service; config imports the
        // application, which imports config back.
        let replaced = ["pump/mod.rs", "pump/copy.rs", "config.rs"];
        let mut files: Vec<(&str, &str)> = GOOD
            .iter()
            .copied()
            .filter(|(rel, _)| !replaced.contains(rel))
            .collect();
        files.extend([
            ("pump/copy.rs", "use crate::service::tcp::Context;"),
            ("config.rs", "use crate::server::Server; use crate::Error;"),
        ]);
        let problems = check(&tree(&files));
        let expected = [
            "missing layer folder src/pump/ (a directory with a mod.rs)",
            "src/config.rs imports crate::server::Server (layer 5) from layer 0",
            "src/config.rs imports crate::Error (layer 5) from layer 0",
            "src/pump/copy.rs imports crate::service::tcp::Context (layer 3) from layer 1",
            "cycle: config -> server -> config\n      \
             src/config.rs names crate::server::Server\n      \
             src/server.rs names crate::config::Config",
            "top-level cycle: config -> server -> config\n      \
             src/config.rs names crate::server::Server\n      \
             src/server.rs names crate::config::Config",
        ];
        for line in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(line)),
                "expected {line:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }
}
