//! No import circles in `src/`: no two files import each other, directly or through others.
//!
//! Reads every file of the library, takes each path it names (`crate::..`, `super::..`,
//! `self::..`, and a declared child module `child::..`), resolves it to the deepest module file
//! that exists, and looks for a cycle in the resulting graph of files. A path into a module's
//! own `mod.rs` that names an item re-exported there (`pub use child::Item`) counts as an
//! import of the child that defines it, so a facade never hides a circle. Comments are
//! skipped; the crate root (`lib.rs`) and test-only files (`tests.rs`) are left out: they
//! only declare or exercise modules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs").to_string();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (line comments; block comments are not used in src/) and
/// without an inline test module at its end (`#[cfg(test)] mod tests { use super::*; .. }`
/// names the file's own module).
fn strip_comments(text: &str) -> String {
    let mut end = text.len();
    if let Some(i) = text.find("#[cfg(test)]\nmod ") {
        let after = &text[i..];
        if after
            .lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with('{'))
        {
            end = i;
        }
    }
    text[..end]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path starting at `start` (just after `prefix::`), with `{a, b::c}` groups expanded.
fn paths_at(s: &[u8], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut cur = prefix;
    loop {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < s.len() && s[i] == b'{' {
            i += 1;
            loop {
                i = paths_at(s, i, cur.clone(), out);
                while i < s.len() && s[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i < s.len() && s[i] == b',' {
                    i += 1;
                    continue;
                }
                if i < s.len() && s[i] == b'}' {
                    i += 1;
                }
                return i;
            }
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
            i += 1;
        }
        if start == i {
            out.push(cur);
            return i;
        }
        cur.push(String::from_utf8_lossy(&s[start..i]).into_owned());
        if s[i..].starts_with(b"::") {
            i += 2;
        } else {
            out.push(cur);
            return i;
        }
    }
}

#[test]
fn no_import_circles_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.retain(|f| {
        let name = f.file_name().unwrap().to_string_lossy();
        name != "main.rs" && name != "lib.rs" && name != "tests.rs"
    });
    let mut by_module: HashMap<Module, PathBuf> = HashMap::new();
    for f in &all {
        by_module.insert(module_of(&src, f), f.clone());
    }
    let texts: HashMap<PathBuf, String> = all
        .iter()
        .map(|f| {
            (
                f.clone(),
                strip_comments(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    // Items a mod.rs re-exports from a child: (module, item) -> child module.
    let mut reexports: HashMap<(Module, String), Module> = HashMap::new();
    for f in &all {
        let m = module_of(&src, f);
        let text = &texts[f];
        for line in text.lines() {
            let l = line.trim();
            let Some(rest) = l.strip_prefix("pub use ") else {
                continue;
            };
            let mut paths = Vec::new();
            let rest = rest.strip_prefix("self::").unwrap_or(rest);
            paths_at(rest.as_bytes(), 0, Vec::new(), &mut paths);
            for p in paths {
                if p.len() >= 2 {
                    let mut child = m.clone();
                    child.push(p[0].clone());
                    if by_module.contains_key(&child) {
                        reexports.insert((m.clone(), p.last().unwrap().clone()), child);
                    }
                }
            }
        }
    }
    let resolve = |base: Module, rest: &[String]| -> Option<Module> {
        let mut m = base;
        let mut i = 0;
        while i < rest.len() {
            let mut next = m.clone();
            next.push(rest[i].clone());
            if by_module.contains_key(&next) {
                m = next;
                i += 1;
            } else {
                break;
            }
        }
        if i < rest.len() {
            if let Some(child) = reexports.get(&(m.clone(), rest[i].clone())) {
                return Some(child.clone());
            }
        }
        by_module.contains_key(&m).then_some(m)
    };
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for f in &all {
        let me = module_of(&src, f);
        let is_mod_rs = f.file_name().unwrap() == "mod.rs";
        let text = &texts[f];
        let s = text.as_bytes();
        let children: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let l = l
                    .trim()
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
                Some(name.to_string())
            })
            .collect();
        let mut refs: Vec<Vec<String>> = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let boundary = i == 0
                || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
            if boundary {
                let word_end = (i..s.len())
                    .find(|&j| !(s[j].is_ascii_alphanumeric() || s[j] == b'_'))
                    .unwrap_or(s.len());
                let word = std::str::from_utf8(&s[i..word_end]).unwrap_or("");
                if word_end > i && s[word_end..].starts_with(b"::") {
                    let base: Option<Module> = match word {
                        "crate" => Some(Vec::new()),
                        "super" => {
                            // super of a mod.rs is its parent's parent module.
                            let mut b = me.clone();
                            b.pop();
                            Some(b)
                        }
                        "self" => Some(me.clone()),
                        w if children.iter().any(|c| c == w) => {
                            let mut b = me.clone();
                            b.push(w.to_string());
                            Some(b)
                        }
                        _ => None,
                    };
                    if let Some(base) = base {
                        let mut found = Vec::new();
                        let end = paths_at(s, word_end + 2, Vec::new(), &mut found);
                        for p in found {
                            refs.push(base.iter().cloned().chain(p).collect());
                        }
                        i = end.max(i + 1);
                        continue;
                    }
                }
                i = word_end.max(i + 1);
                continue;
            }
            i += 1;
        }
        let _ = is_mod_rs;
        for r in refs {
            if let Some(target) = resolve(Vec::new(), &r) {
                if target != me {
                    graph.entry(me.clone()).or_default().insert(target);
                }
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut HashMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for n in graph.get(m).into_iter().flatten() {
            match state.get(n).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|x| x == n).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(n, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = HashMap::new();
    let mut cycles = Vec::new();
    for m in graph.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(m, &graph, &mut state, &mut stack) {
                cycles.push(
                    c.iter()
                        .map(|m| format!("crate::{}", m.join("::")))
                        .collect::<Vec<_>>()
                        .join(" -> "),
                );
                // The search stopped inside this cycle: report it and stop.
                break;
            }
        }
    }
    // The graph must be real: the broker core imports the session layer.
    assert!(
        graph
            .get(&vec!["broker".to_string(), "core".to_string()])
            .is_some_and(|s| s
                .iter()
                .any(|m| m.first().map(String::as_str) == Some("session"))),
        "the import graph was not read (broker::core -> session missing)"
    );
    assert!(
        cycles.is_empty(),
        "import circles in src/:\n{}",
        cycles.join("\n")
    );
}
