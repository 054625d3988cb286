//! `mapga doc [NAME]`: the signature and doc comment of a built-in or standard-library item,
//! read from the embedded `stdlib/` sources, so the language can be explored from a terminal.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::source::FileId;
use crate::syntax::ast::{ItemKind, PatternKind, Program};

use super::DocArgs;

/// One documented item of the standard library.
#[derive(Debug, Clone)]
pub(crate) struct DocEntry {
    /// The module path, `std.solvers.mapga`.
    pub module: &'static str,
    /// The item's name, `mapga`.
    pub name: String,
    /// `built-in` (an `extern fn`, implemented in Rust), `function` or `value`.
    pub kind: &'static str,
    /// The declaration as written, parameters and their doc comments included, without the
    /// body.
    pub signature: String,
    /// The item's doc comment lines.
    pub docs: Vec<String>,
}

impl DocEntry {
    /// `std.solvers.mapga.mapga`.
    pub fn path(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }

    /// The first sentence of the doc comment, for listings, cut to about `width` characters.
    fn summary(&self, width: usize) -> String {
        let text = self.docs.join(" ");
        let text = text.trim();
        let sentence = &text[..first_sentence_end(text)];
        if sentence.chars().count() <= width {
            return sentence.to_string();
        }
        let mut cut = String::new();
        for word in sentence.split_whitespace() {
            if cut.chars().count() + word.chars().count() + 1 > width.saturating_sub(3) {
                break;
            }
            if !cut.is_empty() {
                cut.push(' ');
            }
            cut.push_str(word);
        }
        cut + "..."
    }
}

/// The byte length of the first sentence of `text`: up to the first ". " whose preceding word
/// is not an abbreviation (`et al.`, `Alg.`, `Eq.`, `e.g.`) or a number.
fn first_sentence_end(text: &str) -> usize {
    let mut from = 0;
    while let Some(i) = text[from..].find(". ").map(|i| from + i) {
        let word = text[..i]
            .rsplit(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or("");
        let abbreviation =
            word.len() <= 3 || word.contains('.') || word.ends_with(char::is_numeric);
        if !abbreviation {
            return i + 1;
        }
        from = i + 2;
    }
    text.len()
}

/// Every public item of every standard-library module, in module order.
pub(crate) fn entries() -> Vec<DocEntry> {
    let mut out = Vec::new();
    for module in crate::stdlib::module_paths() {
        let Some(text) = crate::stdlib::module(module) else {
            continue;
        };
        let parsed = crate::syntax::parse(FileId(0), text);
        collect(module, text, &parsed.program, &mut out);
    }
    // The fields and methods of built-in values (`A.pinv`, `ts.pairs`), listed under their
    // kind of value.
    for m in crate::check::members::MEMBER_DOCS {
        let method = m.signature.contains('(');
        out.push(DocEntry {
            module: m.receiver,
            name: m.name.to_string(),
            kind: if method { "method" } else { "field" },
            signature: m.signature.to_string(),
            docs: vec![m.doc.to_string()],
        });
    }
    out
}

/// The module doc (`//!` lines) of a standard-library module.
fn module_docs(module: &str) -> Vec<String> {
    crate::stdlib::module(module)
        .map(|text| crate::syntax::parse(FileId(0), text).program.docs)
        .unwrap_or_default()
}

fn collect(module: &'static str, text: &str, program: &Program, out: &mut Vec<DocEntry>) {
    let slice = |start: u32, end: u32| text[start as usize..end as usize].trim_end().to_string();
    for item in &program.items {
        // The declaration starts after the item's own doc lines.
        let decl_start = |keyword: &str| -> u32 {
            let s = &text[item.span.start as usize..item.span.end as usize];
            s.find(keyword)
                .map(|i| item.span.start + i as u32)
                .unwrap_or(item.span.start)
        };
        let (name, kind, signature) = match &item.kind {
            ItemKind::Extern(e) => (
                e.name.node.clone(),
                "built-in",
                slice(decl_start("extern fn"), item.span.end),
            ),
            ItemKind::Fn(f) if f.public => (
                f.name.node.clone(),
                "function",
                slice(decl_start("pub fn"), f.body.span.start),
            ),
            ItemKind::Let {
                public: true,
                pattern,
                ..
            } => match &pattern.node {
                PatternKind::Name(n) => (
                    n.clone(),
                    "value",
                    slice(decl_start("pub let"), item.span.end),
                ),
                _ => continue,
            },
            _ => continue,
        };
        out.push(DocEntry {
            module,
            name,
            kind,
            signature,
            docs: item.docs.clone(),
        });
    }
}

/// One entry in full.
fn write_entry(out: &mut String, e: &DocEntry) {
    if matches!(e.kind, "method" | "field") {
        let _ = writeln!(
            out,
            "{}  ({} of every {}, built in)\n",
            e.path(),
            e.kind,
            e.module
        );
        for line in &e.docs {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "\n{}", e.signature);
        return;
    }
    let origin = match e.kind {
        "built-in" => "built-in, implemented in Rust".to_string(),
        _ => format!(
            "{}, written in mapga: stdlib/{}.mapga",
            e.kind,
            e.module.trim_start_matches("std.").replace('.', "/")
        ),
    };
    let _ = writeln!(out, "{}  ({origin})", e.path());
    let _ = writeln!(out, "use {}.{}\n", e.module, e.name);
    for line in &e.docs {
        let _ = writeln!(out, "{}", line.strip_prefix(' ').unwrap_or(line));
    }
    if !e.docs.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{}", e.signature);
}

/// A module: the first paragraph of its doc, then one line per item.
fn write_module(out: &mut String, module: &str, items: &[&DocEntry]) {
    let _ = writeln!(out, "{module}");
    for line in module_docs(module)
        .iter()
        .take_while(|l| !l.trim().is_empty())
    {
        let _ = writeln!(out, "  {}", line.strip_prefix(' ').unwrap_or(line));
    }
    let width = items.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in items {
        let summary = e.summary(100usize.saturating_sub(width + 6).max(40));
        let _ = writeln!(out, "    {:width$}  {summary}", e.name);
    }
}

/// Lists everything, or prints the items matching `args.name`; returns the exit code.
pub fn run(args: &DocArgs) -> u8 {
    let all = entries();
    let mut out = String::new();
    let code = render(&all, args.name.as_deref(), &mut out);
    // A closed pipe (`mapga doc | head`) is not an error worth a message.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    code
}

/// Writes the listing or the entries named `name` into `out`; returns the exit code (errors go
/// to standard error).
fn render(all: &[DocEntry], name: Option<&str>, out: &mut String) -> u8 {
    let Some(name) = name else {
        let mut modules: Vec<&str> = all.iter().map(|e| e.module).collect();
        modules.dedup();
        for (i, m) in modules.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let items: Vec<&DocEntry> = all.iter().filter(|e| e.module == *m).collect();
            write_module(out, m, &items);
        }
        out.push_str(
            "\n`mapga doc NAME` shows one item (`mapga doc mapga`), module (`mapga doc std.solvers.dps`), \
             or field or method of a built-in value (`mapga doc A.pinv`, `mapga doc Schedule`).\n",
        );
        return 0;
    };
    // A module path, or a kind of value (`Operator`), lists it.
    if crate::stdlib::module(name).is_some() || all.iter().any(|e| e.module == name) {
        let items: Vec<&DocEntry> = all.iter().filter(|e| e.module == name).collect();
        write_module(out, name, &items);
        return 0;
    }
    // `A.pinv` and `ts.pairs` name a member through a variable: the part after the dot.
    let member = name.rsplit_once('.').map(|(_, m)| m);
    let found: Vec<&DocEntry> = all
        .iter()
        .filter(|e| {
            e.name == name
                || e.path() == name
                || (matches!(e.kind, "method" | "field") && Some(e.name.as_str()) == member)
        })
        .collect();
    if found.is_empty() {
        eprintln!("error: no built-in or standard-library item is called `{name}`");
        let suggestion = all
            .iter()
            .map(|e| (strsim::jaro_winkler(&e.name, name), &e.name))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match suggestion {
            Some((_, best)) => eprintln!("help: did you mean `{best}`?"),
            None => eprintln!("help: `mapga doc` lists every item"),
        }
        return 2;
    }
    for (i, e) in found.iter().enumerate() {
        if i > 0 {
            out.push_str("\n---\n\n");
        }
        write_entry(out, e);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_and_solver_is_documented() {
        let all = entries();
        for name in [
            "mapga", "dps", "pigdm", "ddrm", "diffpir", "reddiff", "psnr", "karras",
        ] {
            let e = all
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("no entry for {name}"));
            assert!(!e.docs.is_empty(), "{name} has no doc comment");
            assert!(e.signature.contains(name), "{}", e.signature);
            assert!(
                !e.signature.contains('{') || e.kind != "function",
                "{}",
                e.signature
            );
        }
        let extern_psnr = all.iter().find(|e| e.name == "psnr").unwrap();
        assert_eq!(extern_psnr.kind, "built-in");
        assert!(extern_psnr.signature.starts_with("extern fn psnr("));
        let mapga = all
            .iter()
            .find(|e| e.path() == "std.solvers.mapga.mapga")
            .unwrap();
        assert!(mapga.signature.starts_with("pub fn mapga("));
        assert!(
            mapga.signature.ends_with("-> Tensor"),
            "{}",
            mapga.signature
        );
    }

    #[test]
    fn operator_and_schedule_members_are_documented() {
        let all = entries();
        for name in [
            "A.pinv",
            "Operator.visualize",
            "ts.pairs",
            "singular_values_cut",
        ] {
            let mut out = String::new();
            assert_eq!(render(&all, Some(name), &mut out), 0, "{name}");
            assert!(out.contains("built in"), "{name}: {out}");
        }
        let mut out = String::new();
        assert_eq!(render(&all, Some("A.pinv"), &mut out), 0);
        assert!(out.contains("A.pinv(y: Tensor) -> Tensor"), "{out}");
        let mut out = String::new();
        assert_eq!(render(&all, Some("Schedule"), &mut out), 0);
        assert!(out.contains("pairs") && out.contains("sigmas"), "{out}");
        let mut out = String::new();
        render(&all, None, &mut out);
        assert!(
            out.contains("Operator\n") && out.contains("gram_solve"),
            "{out}"
        );
    }

    #[test]
    fn summaries_end_at_a_sentence_not_an_abbreviation() {
        let text = "MAP-GA (Gutha et al., WACV 2025, Alg. 2): a restoration. More here.";
        assert_eq!(
            &text[..first_sentence_end(text)],
            "MAP-GA (Gutha et al., WACV 2025, Alg. 2): a restoration."
        );
        assert_eq!(first_sentence_end("No period"), 9);
    }

    #[test]
    fn every_public_item_has_a_doc_comment() {
        let missing: Vec<String> = entries()
            .iter()
            .filter(|e| e.docs.is_empty())
            .map(|e| e.path())
            .collect();
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }
}
