use mapga::source::FileId;
use mapga::syntax::format::format_source;
use mapga::syntax::{parse, scan};

fn fmt(src: &str) -> String {
    match format_source(FileId(0), src) {
        Ok(s) => s,
        Err(d) => panic!("syntax errors: {d:?}\n{src}"),
    }
}

fn comment_texts(text: &str) -> Vec<String> {
    let mut v: Vec<String> = scan::comments(FileId(0), text).into_iter().map(|c| c.text).collect();
    v.sort();
    v
}

/// Removes every span (an object with exactly `file`, `start`, `end`) from a serialized tree.
fn strip_spans(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let is_span = matches!(m.get(&k), Some(Value::Object(o)) if o.len() == 3 && o.contains_key("file") && o.contains_key("start") && o.contains_key("end"));
                if is_span {
                    m.insert(k, Value::Null);
                } else if let Some(x) = m.get_mut(&k) {
                    strip_spans(x);
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                let is_span = matches!(x, Value::Object(o) if o.len() == 3 && o.contains_key("file") && o.contains_key("start") && o.contains_key("end"));
                if is_span {
                    *x = Value::Null;
                } else {
                    strip_spans(x);
                }
            }
        }
        _ => {}
    }
}

/// Structural equality of two programs, ignoring every span (`Item::span`, `Block::span` and
/// `Program::span` are plain `Span` fields, which the derived `PartialEq` compares).
fn same_tree(a: &mapga::syntax::ast::Program, b: &mapga::syntax::ast::Program) -> bool {
    let (mut x, mut y) = (serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap());
    strip_spans(&mut x);
    strip_spans(&mut y);
    x == y
}

fn roundtrip(name: &str, src: &str) -> String {
    let out = fmt(src);
    let p1 = parse(FileId(0), src);
    let p2 = parse(FileId(0), &out);
    assert!(!p2.diags.has_errors(), "{name}: formatted output does not parse: {:?}\n{out}", p2.diags);
    assert!(same_tree(&p1.program, &p2.program), "{name}: AST changed\n{out}");
    let (c1, c2) = (comment_texts(src), comment_texts(&out));
    assert!(c1 == c2, "{name}: comments changed\n{c1:#?}\n{c2:#?}\n{out}");
    assert!(out.ends_with('\n') && !out.ends_with("\n\n"), "{name}: bad ending\n{out:?}");
    let again = fmt(&out);
    assert_eq!(out, again, "{name}: not idempotent");
    out
}

#[test]
fn corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack: Vec<std::path::PathBuf> = ["stdlib", "pipelines", "examples"].iter().map(|d| root.join(d)).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() { stack.push(e.unwrap().path()); }
        } else if p.extension().is_some_and(|e| e == "mapga") {
            let src = std::fs::read_to_string(&p).unwrap();
            if parse(FileId(0), &src).diags.has_errors() { eprintln!("skip {}", p.display()); continue; }
            let out = roundtrip(&p.display().to_string(), &src);
            let name = p.strip_prefix(root).unwrap().display().to_string().replace('/', "__");
            std::fs::write(format!("/tmp/fmtout/{name}"), &out).unwrap();
        }
    }
}
#[test]
fn dbg() {
    println!("{}", fmt("//! a\n\nuse x\n\nparam a = 1\nparam b = 2\n"));
}
