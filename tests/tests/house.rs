//! The house a newcomer reads: no two modules of a crate import each other, directly or round a
//! circle (so each module can be read, and tested, after the ones it uses), and each binary's
//! `main.rs` stays a dispatcher, its subcommands in modules of their own.
//!
//! Every `.rs` file under a crate's `src/` is a module (`a/mod.rs` and `a.rs` are `a`); a path
//! that starts with `crate::`, `super::` or `self::` (in code, `use` trees included, not in
//! comments, doc links or `#[cfg(test)]` items), or with the name of a child module, is an edge to
//! the deepest module it names. A module using its own ancestor is not an edge: a parent declares
//! its children, and a child reaching for the parent's shared items is the ordinary direction.

use smoothface_tests::repo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use syn::visit::Visit;

/// A module's path below its crate root: `["kernels", "direct"]`; the root itself is `[]`.
type ModPath = Vec<String>;

/// The module a source file is, from where it lies under `src/`.
fn module_of(rel: &Path) -> ModPath {
    let mut parts: ModPath = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Whether an item is compiled for tests only (`#[cfg(test)]`).
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Collects the module paths a file's code names through `crate::`, `super::` and `self::`.
struct Uses<'a> {
    here: &'a ModPath,
    modules: &'a BTreeSet<ModPath>,
    found: Vec<ModPath>,
}

impl Uses<'_> {
    /// The absolute path of `segments` as written in this module; `None` when it does not start
    /// at the crate, the parent, this module or one of its children.
    fn absolute(&self, segments: &[String]) -> Option<ModPath> {
        let (first, rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => self.here[..self.here.len().checked_sub(1)?].to_vec(),
            child => {
                let mut child_path = self.here.clone();
                child_path.push(child.to_string());
                if !self.modules.contains(&child_path) {
                    return None;
                }
                let mut path = child_path;
                path.extend(rest.iter().cloned());
                return Some(path);
            }
        };
        let mut rest = rest;
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base.pop();
            rest = tail;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.found.extend(self.absolute(prefix));
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.found.extend(self.absolute(prefix));
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.found.extend(self.absolute(prefix)),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.found.extend(self.absolute(&segments));
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro calls (`bail!(crate::x::Error...)`) are tokens, not a syntax tree:
        // every `crate`/`super`/`self` followed by `::` names is read from them.
        let tokens: Vec<String> = m
            .tokens
            .clone()
            .into_iter()
            .map(|t| t.to_string())
            .collect();
        for (i, t) in tokens.iter().enumerate() {
            if matches!(t.as_str(), "crate" | "super" | "self") {
                let mut path = vec![t.clone()];
                let mut j = i + 1;
                while tokens.get(j).map(String::as_str) == Some(":")
                    && tokens.get(j + 1).map(String::as_str) == Some(":")
                {
                    let Some(next) = tokens.get(j + 2) else { break };
                    path.push(next.clone());
                    j += 3;
                }
                self.found.extend(self.absolute(&path));
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// One crate's module graph: each module, the modules it uses (neither itself nor an ancestor).
fn module_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.expect("the source tree is readable");
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src).expect("under src/");
            let text = std::fs::read_to_string(path).expect("a source file is readable");
            let file = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
            files.insert(module_of(rel), file);
        }
    }
    let modules: BTreeSet<ModPath> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(here, file)| {
            let mut uses = Uses {
                here,
                modules: &modules,
                found: Vec::new(),
            };
            uses.visit_file(file);
            let edges = uses
                .found
                .into_iter()
                .filter_map(|p| {
                    (0..=p.len())
                        .rev()
                        .map(|k| p[..k].to_vec())
                        .find(|m| modules.contains(m))
                })
                .filter(|m| !here.starts_with(m))
                .collect();
            (here.clone(), edges)
        })
        .collect()
}

/// The circles of a graph: each strongly connected component of more than one module, found by
/// checking, for every pair, that each reaches the other (the graphs are small).
fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<BTreeSet<ModPath>> {
    let reach = |from: &ModPath| -> BTreeSet<ModPath> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&ModPath, BTreeSet<ModPath>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<BTreeSet<ModPath>> = Vec::new();
    for (m, from_m) in &reaches {
        let component: BTreeSet<ModPath> = from_m
            .iter()
            .filter(|n| *n != *m && reaches[n].contains(*m))
            .cloned()
            .chain(std::iter::once((*m).clone()))
            .collect();
        if component.len() > 1 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

fn show(m: &ModPath) -> String {
    if m.is_empty() {
        "(crate root)".into()
    } else {
        m.join("::")
    }
}

#[test]
fn the_graph_reader_finds_a_circle_and_only_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("kernels")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(src.join(p), s).unwrap();
    write(
        "lib.rs",
        "pub mod a; pub mod b; pub mod c; pub mod kernels;",
    );
    // a -> b through a use group, b -> a through a path in a macro: a circle.
    write("a.rs", "use crate::{b::Thing, c};");
    write(
        "b.rs",
        "fn f() -> anyhow::Result<()> { anyhow::bail!(super::a::Error) }",
    );
    // c -> kernels::direct only in a doc comment and in test code: no edge.
    write(
        "c.rs",
        "//! [`crate::kernels::direct`]\n#[cfg(test)]\nmod tests { use crate::kernels::direct; }",
    );
    // A child using its parent is not an edge; a parent using its child is.
    write("kernels/mod.rs", "pub mod direct; use direct::run;");
    write(
        "kernels/direct.rs",
        "use super::available; use crate::c::X;",
    );
    let graph = module_graph(src);
    let m = |s: &str| -> ModPath { s.split("::").map(String::from).collect() };
    assert_eq!(graph[&m("a")], BTreeSet::from([m("b"), m("c")]));
    assert_eq!(graph[&m("b")], BTreeSet::from([m("a")]));
    assert_eq!(graph[&m("c")], BTreeSet::new());
    assert_eq!(graph[&m("kernels")], BTreeSet::from([m("kernels::direct")]));
    assert_eq!(graph[&m("kernels::direct")], BTreeSet::from([m("c")]));
    assert_eq!(
        circles(&graph),
        vec![BTreeSet::from([m("a"), m("b")])],
        "only a and b use each other"
    );
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut report = Vec::new();
    for krate in ["shared", "device", "trainer"] {
        let graph = module_graph(&repo().join(krate).join("src"));
        assert!(graph.len() > 5, "{krate}: too few modules read");
        for circle in circles(&graph) {
            let lines: Vec<String> = circle
                .iter()
                .map(|m| {
                    let into: Vec<String> = graph[m]
                        .iter()
                        .filter(|n| circle.contains(*n))
                        .map(show)
                        .collect();
                    format!("    {} uses {}", show(m), into.join(", "))
                })
                .collect();
            report.push(format!("{krate}:\n{}", lines.join("\n")));
        }
    }
    assert!(
        report.is_empty(),
        "modules that use each other (move what both need into a module of its own):\n{}",
        report.join("\n")
    );
}

#[test]
fn each_main_rs_is_a_dispatcher() {
    for main in ["device/src/main.rs", "trainer/src/main.rs"] {
        let text = std::fs::read_to_string(repo().join(main)).unwrap();
        let lines = text.lines().count();
        assert!(
            lines <= 300,
            "{main} has {lines} lines: a subcommand's arguments and body belong in its own module \
             under src/cli/"
        );
    }
}
