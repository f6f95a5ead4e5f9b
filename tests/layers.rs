//! The layering of `src/` (issue 13): every module imports only from the layers
//! below its own, so there is no import circle and no arrow that runs back up.
//! Reads the sources as text: each `crate::NAME` (and `confab::NAME` in `main.rs`),
//! in code only, not in comments or strings, names the module it reaches into.
//! (`super::` paths are not followed: in this code base they stay inside a module.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, as the map in `src/lib.rs` draws
/// them. A module may import from any lower layer, never from a higher one nor
/// from a peer of its own layer (except as [`ALLOWED`] says).
const LAYERS: &[(&str, u8)] = &[
    // L0, leaves: the contract's types and rules (no I/O), the lock file, memory.
    ("domain", 0),
    ("lockfile", 0),
    ("memory", 0),
    // L1: configuration (the settings, their defaults, how a secret is shown).
    ("config", 1),
    // L2: tokens and passwords, storage, the bus between nodes.
    ("auth", 2),
    ("store", 2),
    ("bus", 2),
    // L3: the use-cases.
    ("chat", 3),
    // L4: the accept loop, webhook delivery, the demo marketplace.
    ("server", 4),
    ("webhook", 4),
    ("demo", 4),
    // L5: the REST routes, their state, extractors and error type, the middleware.
    ("http", 5),
    // L6: the WebSocket endpoint (it may use `http`'s error type and extractors).
    ("ws", 6),
    // L7: builds the state, merges the routers, serves.
    ("app", 7),
    // L8: the binary (`src/main.rs`, which names the library `confab::`).
    ("main", 8),
];

/// Imports the layers forbid but the code keeps, each with its reason:
/// `(from, to, why)`. Empty: a new entry needs a reason good enough to write here.
const ALLOWED: &[(&str, &str, &str)] = &[];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, layer)| *layer)
}

#[test]
fn every_import_runs_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files under {}", files.len(), src.display());
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap_or(file);
        let Some(module) = module_of(relative) else { continue };
        let shown = format!("src/{}", relative.display());
        let Some(own) = layer(&module) else {
            problems.push(format!("{shown}: module {module} is not in LAYERS (tests/layers.rs)"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {shown}: {e}"));
        let prefix = if module == "main" { "confab" } else { "crate" };
        for target in references(&code_only(&text), prefix) {
            // Not a module: a macro exported at the crate root, say.
            let Some(theirs) = layer(&target) else { continue };
            let allowed = ALLOWED.iter().any(|(from, to, _)| *from == module && *to == target);
            if target != module && theirs >= own && !allowed {
                problems.push(format!("{shown} imports {target} (L{theirs}) from {module} (L{own})"));
            }
        }
    }
    assert!(problems.is_empty(), "imports against the layers:\n{}", problems.join("\n"));
}

#[test]
fn the_table_has_every_module_of_the_crate() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_else(|e| panic!("reading src/lib.rs: {e}"));
    let lib = code_only(&lib);
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("mod "))?.strip_suffix(';')
        })
        .collect();
    let tabled: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).filter(|name| *name != "main").collect();
    assert_eq!(declared, tabled, "the modules of src/lib.rs against LAYERS (tests/layers.rs)");
}

#[test]
fn the_reader_finds_grouped_imports_and_skips_comments_and_strings() {
    let text = r##"
        use crate::{
            http::{self, ApiError},
            store, // crate::app in a comment
        };
        /* crate::ws /* nested */ crate::app */
        /// crate::app in a doc comment
        const URL: &str = "crate::app and //";
        const RAW: &str = r#"crate::app "quoted""#;
        fn f<'a>(c: char) -> bool { c == '"' && crate::chat::ok() }
        fn g() { $crate::domain::x(); let _ = '{'; }
        fn h() -> char { let _ = crate::bus::x(); '\'' }
    "##;
    let found = references(&code_only(text), "crate");
    assert_eq!(found, BTreeSet::from(["bus", "chat", "domain", "http", "store"].map(String::from)));
}

/// The module a file of `src/` belongs to: its first path component (`main` for
/// the binary); `None` for `lib.rs`, the map itself.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" => None,
        name => Some(name.strip_suffix(".rs").unwrap_or(name).to_owned()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text with comments (line, doc and nested block comments), string literals
/// and char literals replaced by spaces; line breaks are kept.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r' && !after_ident && matches!(next, Some('"' | '#')) {
            // A raw string: r"…", r#"…"#, and so on (the `b` of br"…" is just a letter before it).
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < chars.len() && !(chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#'))) {
                blank(&mut out, chars[j]);
                j += 1;
            }
            i = j + 1 + hashes;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''); a lifetime ('a) has no closing quote.
            // Past the opening quote and the first char (or escape), then to the close.
            i += if next == Some('\\') { 3 } else { 2 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The top-level modules that `prefix::NAME` paths name, including each first
/// segment of a `prefix::{a::b, c}` group.
fn references(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let needle = format!("{prefix}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// The first path segment of every item of a `{…}` group (the text after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            c if expect_head && depth == 0 && !c.is_whitespace() => {
                expect_head = false;
                let name = identifier(&group[i..]);
                if !name.is_empty() && name != "self" {
                    heads.push(name.to_owned());
                }
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}
