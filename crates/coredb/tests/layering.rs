//! The crate's layering rule, checked: every module uses only the modules of the layers below
//! it, never one of its own layer or above, so there are no circles.
//!
//! The layers are the ones listed in the crate documentation (`src/lib.rs`, under "Layers"),
//! read from there, so the documentation and the check cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers from the `text` block under `## Layers` in lib.rs, lowest first: the module names
/// are the comma-separated words before the description.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let docs: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = docs
        .iter()
        .position(|l| l.trim() == "## Layers")
        .expect("lib.rs documents its layers under `## Layers`");
    let fence = start
        + docs[start..]
            .iter()
            .position(|l| l.starts_with("```text"))
            .expect("a text block with the layers");
    let mut layers: Vec<Vec<String>> = docs[fence + 1..]
        .iter()
        .take_while(|l| !l.starts_with("```"))
        .map(|line| {
            let names = line.split("  ").next().unwrap_or("");
            names
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .collect();
    layers.reverse();
    layers
}

/// Every `.rs` file under `dir`.
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

/// The top-level module a file belongs to (`conn/open.rs` -> `conn`, `session.rs` -> `session`).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src_dir()).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib").then_some(name)
}

/// The code of a file without comments (doc links name paths that are not imports) and without
/// string literals.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = match line.find("//") {
                Some(i) => &line[..i],
                None => line,
            };
            // Quoted text may hold anything; paths in it are not imports.
            let mut out = String::new();
            let mut in_string = false;
            for c in line.chars() {
                if c == '"' {
                    in_string = !in_string;
                } else if !in_string {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segments after each `crate::` in `code` (`crate::{a, b::c}` gives `a`, `b`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let macro_path = rest[..i].ends_with('$');
        let word_before = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if macro_path || word_before {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let layers = layers();
    let rank: BTreeMap<String, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (n.clone(), i)))
        .collect();
    assert!(
        rank.len() > 10,
        "the layer list in lib.rs looks wrong: {layers:?}"
    );
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut problems = Vec::new();
    let mut edges = 0;
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let shown = file.strip_prefix(src_dir()).unwrap().display().to_string();
        let Some(&own) = rank.get(&module) else {
            problems.push(format!(
                "{shown}: module `{module}` is not in the layer list of lib.rs"
            ));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for used in crate_paths(&code) {
            if used == module {
                continue;
            }
            match rank.get(&used) {
                None => problems.push(format!(
                    "{shown}: `crate::{used}` is not a module; inside the crate, use items through their module's path"
                )),
                Some(&theirs) if theirs >= own => problems.push(format!(
                    "{shown}: `{module}` (layer {own}) uses `{used}` (layer {theirs}): only layers below may be used"
                )),
                Some(_) => edges += 1,
            }
        }
    }
    assert!(
        edges > 20,
        "found only {edges} uses between modules: is the scan broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_core_crate_forbids_unsafe_code() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}

#[test]
fn the_scan_finds_grouped_and_nested_paths_and_skips_comments_and_macros() {
    let code = code_of(
        "use crate::{error::Error, exec};\n// crate::manager\nlet x = crate::row::Row;\n$crate::NamedParams\nlet s = \"crate::global\";",
    );
    assert_eq!(crate_paths(&code), ["error", "exec", "row"]);
}
