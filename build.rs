//! Embeds the standard library: generates a table of every `stdlib/**/*.mapga` file as
//! `(module path, include_str!(file))`, so an installed `mapga` works from any folder.

use std::fs;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "mapga") {
            out.push(p);
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let std_dir = root.join("stdlib");
    println!("cargo:rerun-if-changed=stdlib");
    let mut files = Vec::new();
    collect(&std_dir, &mut files);
    let mut table = String::from("/// Every standard-library module: (module path, source text).\npub const FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&std_dir).expect("file is under stdlib/");
        let module = format!(
            "std.{}",
            rel.with_extension("")
                .to_string_lossy()
                .replace(['/', '\\'], ".")
        );
        table.push_str(&format!(
            "    ({module:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("stdlib_files.rs");
    fs::write(out, table).expect("write the stdlib table");
}
