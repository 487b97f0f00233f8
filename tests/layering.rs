//! The tiers of src/ import only downward (ARCHITECTURE.md). Each top-level module of src/ has a
//! tier; an import (`crate::m` in code, not in unit tests) from a module to one of a higher or
//! equal tier is a back-edge (doc links count: they are read from the source text). The back-edges that remain from before the tiers were drawn are
//! listed in `KNOWN_BACK_EDGES`: a new one fails this test with the file that makes it, and a
//! listed one that is gone fails it too, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. Modules of one tier may not import each other.
const TIERS: &[&[&str]] = &[
    &["core"],
    &["cpu", "cuda", "autocast"],
    &["backend"],
    &["autograd"],
    &["tensor"],
    &["ops"],
    &["nn", "optim", "data", "dist"],
    &["train", "testing"],
    &["selftest"],
];

/// Imports that still point up or sideways, each to be cut (issue 13); (from, to).
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[];

fn tier_of(module: &str) -> Option<usize> {
    TIERS.iter().position(|tier| tier.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named by `crate::` paths in `code`, including `use crate::{a::.., b}`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find(';').unwrap_or(group.len())];
            let mut depth = 0;
            let mut start = true;
            for (i, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        if depth == 0 {
                            found.insert(ident(&body[i..]));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    found
}

/// Every import between top-level modules: (from, to) -> the files that make it.
fn module_edges(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src).expect("under src/");
        let first = rel.components().next().expect("a component");
        let first = first.as_os_str().to_string_lossy().to_string();
        if first == "bin" || first == "lib.rs" {
            continue;
        }
        let from = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&path).expect("a source file");
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for to in imported_modules(code) {
            if to != from && tier_of(&to).is_some() {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_module_of_src_has_a_tier() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let module = name.trim_end_matches(".rs");
        if module == "bin" || module == "lib" {
            continue;
        }
        assert!(
            tier_of(module).is_some(),
            "src/{name} has no tier in tests/layering.rs TIERS (and in ARCHITECTURE.md)"
        );
    }
}

#[test]
fn imports_point_only_downward_except_the_known_back_edges() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = module_edges(&src);
    let known: BTreeSet<(String, String)> = KNOWN_BACK_EDGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut new = Vec::new();
    let mut back = BTreeSet::new();
    for ((from, to), files) in &edges {
        let (Some(a), Some(b)) = (tier_of(from), tier_of(to)) else {
            continue;
        };
        if b >= a {
            back.insert((from.clone(), to.clone()));
            if !known.contains(&(from.clone(), to.clone())) {
                new.push(format!("{from} -> {to} (tier {a} -> {b}) in {files:?}"));
            }
        }
    }
    assert!(
        new.is_empty(),
        "imports that point up or sideways (cut them, or move the item to a lower tier):\n{}",
        new.join("\n")
    );
    let gone: Vec<_> = known.difference(&back).collect();
    assert!(
        gone.is_empty(),
        "back-edges that no longer exist: remove them from KNOWN_BACK_EDGES: {gone:?}"
    );
}

#[test]
fn the_import_reader_sees_paths_and_groups() {
    let code = "use crate::core::error::Result;\nuse crate::{backend::{self, RawTensor}, ops};\n\
                fn f() { crate::cuda::gpu(d); }";
    let found: Vec<String> = imported_modules(code).into_iter().collect();
    assert_eq!(found, ["backend", "core", "cuda", "ops"]);
}
