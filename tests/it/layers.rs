//! The source files import each other along layers, never in a circle: what each file
//! names of the crate (`crate::...`, `super::...`, a child module's `child::...`) is an
//! edge to the file that holds it, and the graph of those edges has no cycle, in the
//! library and in the benchmark. A re-export (`pub use`) is a module's facade, not a
//! dependency of its code, and a file's `#[cfg(test)] mod tests` is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate (`["pipeline", "sink"]`), by the file that holds it.
type Modules = BTreeMap<Vec<String>, PathBuf>;

/// Every `.rs` file under `root` but those under `skip`, by module path.
fn modules(root: &Path, skip: Option<&Path>) -> Modules {
    let mut found = Modules::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if Some(path.as_path()) == skip {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap().with_extension("");
                let mut module: Vec<String> = relative
                    .iter()
                    .map(|part| part.to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                found.insert(module, path);
            }
        }
    }
    found
}

/// The code of a file that counts: no comments, no tests module, no re-exports, on one
/// line.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut code = String::new();
    let mut statement = String::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        statement.push_str(line);
        statement.push(' ');
        if line.ends_with(';') || line.ends_with('{') || line.ends_with('}') {
            let trimmed = statement.trim_start();
            let reexport = trimmed.starts_with("pub use ")
                || (trimmed.starts_with("pub(") && trimmed.contains(") use "));
            if !reexport {
                code.push_str(&statement);
            }
            statement.clear();
        }
    }
    code.push_str(&statement);
    code
}

/// Reads the path that starts at `at` (after its first segment's `::`) into `paths`,
/// prefixed with `base`; a `{a, b::c}` group gives a path per item.
fn read_path(code: &[u8], mut at: usize, base: Vec<String>, paths: &mut Vec<Vec<String>>) {
    let mut path = base;
    loop {
        while code.get(at) == Some(&b' ') {
            at += 1;
        }
        if code.get(at) == Some(&b'{') {
            // A group: each comma-separated item at depth one is a path of its own.
            let mut depth = 0;
            let mut start = at + 1;
            let mut i = at;
            while i < code.len() {
                match code[i] {
                    b'{' => depth += 1,
                    b'}' | b',' if depth == 1 => {
                        read_path(code, start, path.clone(), paths);
                        start = i + 1;
                        if code[i] == b'}' {
                            return;
                        }
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            return;
        }
        let end = (at..code.len())
            .find(|&i| !(code[i].is_ascii_alphanumeric() || code[i] == b'_'))
            .unwrap_or(code.len());
        if end == at {
            break;
        }
        let segment = String::from_utf8_lossy(&code[at..end]).into_owned();
        if segment != "self" {
            path.push(segment);
        }
        if code[end..].starts_with(b"::") {
            at = end + 2;
        } else {
            break;
        }
    }
    paths.push(path);
}

/// The module paths that a file's code names.
fn named(module: &[String], code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let children: Vec<&str> = code
        .split("mod ")
        .skip(1)
        .filter_map(|rest| rest.split(';').next())
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("::") {
        let start = code[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        if start > 0 && (bytes[start - 1] == b':' || bytes[start - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let first = &code[start..at];
        let mut base = match first {
            "crate" => Vec::new(),
            // From `a/b.rs` and from `a/b/mod.rs` alike, `super` is `a`.
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            child if children.contains(&child) => {
                let mut base = module.to_vec();
                base.push(child.to_owned());
                base
            }
            _ => continue,
        };
        let mut rest = at + 2;
        while code[rest..].starts_with("super::") {
            base.pop();
            rest += "super::".len();
        }
        read_path(bytes, rest, base, &mut paths);
    }
    paths
}

/// The file that holds what `path` names: its longest prefix that is a module.
fn holder<'a>(modules: &'a Modules, path: &[String]) -> Option<&'a PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|len| modules.get(&path[..len]))
}

/// The edges between the files under `root`, by file.
fn imports(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules = modules(root, skip);
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let code = code(&std::fs::read_to_string(file).unwrap());
        let targets: BTreeSet<PathBuf> = named(module, &code)
            .iter()
            .filter_map(|path| holder(&modules, path))
            .filter(|target| *target != file)
            .cloned()
            .collect();
        edges.insert(file.clone(), targets);
    }
    edges
}

/// A cycle of the graph, as the files along it, if there is one.
fn cycle(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        file: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        done: &mut BTreeSet<PathBuf>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = stack.iter().position(|f| f == file) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(file.clone());
            return Some(cycle);
        }
        if !done.insert(file.clone()) {
            return None;
        }
        stack.push(file.clone());
        for next in edges.get(file).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|file| visit(file, edges, &mut done, &mut Vec::new()))
}

fn assert_no_cycle(root: &Path, skip: Option<&Path>) {
    let edges = imports(root, skip);
    assert!(edges.len() > 5, "{} files under {root:?}", edges.len());
    if let Some(cycle) = cycle(&edges) {
        let names: Vec<_> = cycle
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        panic!("an import circle under {root:?}: {}", names.join(" -> "));
    }
}

#[test]
fn no_two_files_of_the_library_import_each_other_even_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_no_cycle(&src, Some(&src.join("bin")));
}

#[test]
fn no_two_files_of_the_benchmark_import_each_other_even_through_others() {
    let bench =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/testkit/src/bin/cache-layer-bench");
    assert_no_cycle(&bench, None);
}

#[test]
fn the_check_finds_a_circle_between_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\nmod f;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "use super::c::{C, D};\npub struct B;\n"),
        ("c.rs", "pub struct C;\nfn f() { crate::a::A; }\n"),
        ("d.rs", "\npub use crate::e::E;\n"),
        ("e.rs", "pub struct E;\n"),
        ("f.rs", "//! crate::a::A in a comment\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let edges = imports(dir.path(), None);
    let cycle = cycle(&edges).expect("a -> b -> c -> a");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    // Neither a re-export nor a comment is an edge.
    assert!(edges[&dir.path().join("d.rs")].is_empty());
    assert!(edges[&dir.path().join("f.rs")].is_empty());
}
