//! The editor support in `editors/` stays in step with the language: the VS Code extension's
//! files parse, point at each other, and the TextMate grammar highlights every reserved word of
//! the pest grammar (so a keyword added to `grammar/mapga.pest` fails here until it is added to
//! the highlighting too).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The words of the `keyword` rule of the pest grammar.
fn pest_keywords() -> Vec<String> {
    let grammar = std::fs::read_to_string(root().join("grammar/mapga.pest")).unwrap();
    let start = grammar.find("keyword = @{").expect("a keyword rule");
    let end = start
        + grammar[start..]
            .find("~ !ident_char")
            .expect("end of the keyword rule");
    grammar[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_vscode_extension_is_complete() {
    let ext = root().join("editors/vscode-mapga");
    let package = json(&ext.join("package.json"));
    let language = &package["contributes"]["languages"][0];
    assert_eq!(language["id"], "mapga");
    assert_eq!(language["extensions"][0], ".mapga");
    let config = language["configuration"].as_str().unwrap();
    assert_eq!(json(&ext.join(config))["comments"]["lineComment"], "//");
    let grammar = &package["contributes"]["grammars"][0];
    assert_eq!(grammar["scopeName"], "source.mapga");
    let tm = json(&ext.join(grammar["path"].as_str().unwrap()));
    assert_eq!(tm["scopeName"], "source.mapga");
    // Every pattern the top level includes exists in the repository.
    for p in tm["patterns"].as_array().unwrap() {
        let name = p["include"].as_str().unwrap().trim_start_matches('#');
        assert!(
            tm["repository"].get(name).is_some(),
            "missing repository entry {name}"
        );
    }
}

#[test]
fn every_keyword_is_highlighted() {
    let tm = json(&root().join("editors/vscode-mapga/syntaxes/mapga.tmLanguage.json"));
    let mut patterns = String::new();
    for group in ["keywords", "constants", "declarations"] {
        for p in tm["repository"][group]["patterns"].as_array().unwrap() {
            patterns.push_str(p["match"].as_str().unwrap_or(""));
            patterns.push('|');
        }
    }
    let words: Vec<&str> = patterns
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .collect();
    let keywords = pest_keywords();
    assert!(keywords.len() > 20, "parsed {keywords:?}");
    for k in &keywords {
        assert!(
            words.contains(&k.as_str()),
            "keyword `{k}` is not highlighted"
        );
    }
}
