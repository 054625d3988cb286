//! A mutation fuzzer for the front end, on stable Rust: parser, formatter, checker and the
//! rendering of diagnostics.
//!
//!     cargo run --release --example fuzz_check -- --inputs 1000000 --seed 1
//!
//! **Inputs.** The seed corpus is every `.mapga` file shipped under `pipelines/`, `examples/`,
//! `stdlib/` and `tests/`, plus the kept corpus `tests/fuzz/corpus/`. Each input is a corpus
//! entry changed by one to sixteen stacked mutations, all drawn from one SplitMix64 stream, so
//! a run is the same for the same seed, files and code:
//!
//! * bytes: deleted, inserted (brackets, quotes, line breaks, `\r`, tabs, a byte-order mark,
//!   multi-byte characters, any byte) or replaced;
//! * tokens: a word, number, string or operator replaced by, or joined with, another from a
//!   dictionary (every literal of `grammar/mapga.pest`: keywords and punctuation; every name
//!   in the corpus; edge-case numbers and strings), deleted, duplicated or swapped;
//! * lines: deleted, duplicated, swapped, repeated many times, or taken from another file;
//! * splices: the start of one file joined to the end of another;
//! * gently (three inputs in ten): only names, numbers and strings replaced by others of
//!   their kind, so that most still parse and the checker sees wrong types and values.
//!
//! A tenth of the inputs also get `--set NAME=VALUE` overrides (of a param the text declares,
//! or of any name; the value from the dictionary).
//!
//! **Each input** is parsed (`mapga::syntax::parse`), formatted
//! (`mapga::syntax::format::format_source`; when that succeeds, its output must parse without
//! errors and format to itself) and checked (`mapga::check::check_source`, with the original
//! file's folder as the base of relative paths, so imports, images and models resolve as they
//! would for the file; half the inputs, drawn at random, with the permissions `mapga check`
//! gives a file, the others with the library's default, everything allowed), and its
//! diagnostics are rendered both ways, all under `std::panic::catch_unwind` on a worker
//! thread. An input is a **panic** if any step panics, a **hang** if it takes more than
//! `--time-limit` seconds (2 by default), and a **format** failure if the formatter's output
//! does not parse again or is not its own fixed point. An input still running at 15 times the
//! limit is left to its thread (a hang); after two such the run stops.
//!
//! **Findings** are minimised (lines, then ever smaller runs of characters, are deleted while
//! the input still fails the same way) and written to `tests/fuzz/crashes/` as
//! `KIND-HASH.mapga`, with comment lines at the top that say how to run it again:
//! `// fuzz-base:` (the folder its relative paths resolve against), `// fuzz-found:` (what
//! happened; `(restricted)` when it was checked with the command line's permissions) and
//! `// fuzz-set: NAME=VALUE` (its overrides). A process that aborts (a stack overflow cannot
//! be caught) leaves the input it was running in `target/fuzz/in_flight-PID.mapga`; the next
//! run reports it and moves it to the crashes folder.
//!
//! **Growth.** An input whose diagnostics (code and message shape) or checked graph (the
//! built-ins it calls) show something no earlier input showed joins the in-memory corpus, so
//! later mutations start from it. `--save-corpus DIR` also writes those (up to `--save-max`,
//! 200 by default, of at most 8 KB) to DIR, and `--distill DIR... --into OUT` keeps a small
//! set of such files that reaches all they reach beyond the shipped files: that is how
//! `tests/fuzz/corpus/` was made.
//!
//! Options: `--inputs N` (100,000), `--seed N` (1), `--time-limit SECONDS` (2), `--max-len
//! BYTES` (16,384), `--progress SECONDS` (10), `--crashes DIR`, `--save-corpus DIR`,
//! `--replay FILE...` (run these files once each, with their `// fuzz-` lines, and report),
//! `--save-max N`, `--distill DIR --into DIR`.
//! It exits with 1 when it found anything.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mapga::check::{check_source, CheckOptions};
use mapga::diagnostics::{render, render_plain, RenderOptions};
use mapga::graph::Op;
use mapga::io::permissions::Permissions;
use mapga::source::FileId;
use mapga::syntax::format::format_source;
use mapga::syntax::parse;

// ───────────────────────────── options ─────────────────────────────

/// The command line.
struct Options {
    inputs: u64,
    seed: u64,
    time_limit: Duration,
    max_len: usize,
    progress: Duration,
    crashes: PathBuf,
    save_corpus: Option<PathBuf>,
    save_max: usize,
    replay: Vec<PathBuf>,
    distill: Vec<PathBuf>,
    into: Option<PathBuf>,
}

/// The crate's folder: the corpus, the grammar and the default output folders are under it.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        inputs: 100_000,
        seed: 1,
        time_limit: Duration::from_secs(2),
        max_len: 16_384,
        progress: Duration::from_secs(10),
        crashes: root().join("tests/fuzz/crashes"),
        save_corpus: None,
        save_max: 200,
        replay: Vec::new(),
        distill: Vec::new(),
        into: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{name} wants a whole number, not `{v}`"))
        };
        match a.as_str() {
            "--inputs" => o.inputs = number("--inputs", value("--inputs")?)?,
            "--seed" => o.seed = number("--seed", value("--seed")?)?,
            "--time-limit" => {
                let v = value("--time-limit")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--time-limit wants seconds, not `{v}`"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(format!("--time-limit wants a positive number, not `{v}`"));
                }
                o.time_limit = Duration::from_secs_f64(secs);
            }
            "--max-len" => o.max_len = number("--max-len", value("--max-len")?)?.max(16) as usize,
            "--progress" => {
                o.progress = Duration::from_secs(number("--progress", value("--progress")?)?)
            }
            "--crashes" => o.crashes = PathBuf::from(value("--crashes")?),
            "--save-corpus" => o.save_corpus = Some(PathBuf::from(value("--save-corpus")?)),
            "--save-max" => o.save_max = number("--save-max", value("--save-max")?)? as usize,
            "--distill" => o.distill.push(PathBuf::from(value("--distill")?)),
            "--into" => o.into = Some(PathBuf::from(value("--into")?)),
            "--replay" => {
                o.replay.extend(args.by_ref().map(PathBuf::from));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: fuzz_check [--inputs N] [--seed N] [--time-limit SECONDS] \
                            [--max-len BYTES] [--progress SECONDS] [--crashes DIR] \
                            [--save-corpus DIR [--save-max N]] [--replay FILE...] \
                            [--distill DIR... --into DIR [--save-max N]]"
                        .to_string(),
                )
            }
            other => return Err(format!("unknown option `{other}` (try --help)")),
        }
    }
    Ok(o)
}

// ───────────────────────────── randomness ─────────────────────────────

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// 1, 2, 4, ... up to `max`, each half as likely as the one before.
    fn power(&mut self, max: usize) -> usize {
        let mut n = 1;
        while n < max && self.chance(50) {
            n *= 2;
        }
        n.min(max)
    }
}

// ───────────────────────────── corpus ─────────────────────────────

/// One corpus entry: its text and the folder its relative paths resolve against.
#[derive(Clone)]
struct Entry {
    /// The file name given to the checker (it names the file in diagnostics and imports).
    name: String,
    base: PathBuf,
    text: String,
    /// Check with the command line's permissions (reads under the file's project, writes
    /// under an output folder) instead of the library's default (everything allowed).
    restricted: bool,
    /// `--set NAME=VALUE` overrides of the file's params.
    overrides: Vec<(String, String)>,
}

const BASE_TAG: &str = "// fuzz-base: ";
const FOUND_TAG: &str = "// fuzz-found: ";
const SET_TAG: &str = "// fuzz-set: ";

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "mapga") {
            out.push(p);
        }
    }
}

/// A corpus file: its `// fuzz-base:` line, if any, names the folder (relative to the crate)
/// its paths resolve against; otherwise its own folder does.
fn load_entry(path: &Path) -> Option<Entry> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let base = text
        .lines()
        .take(4)
        .find_map(|l| l.strip_prefix(BASE_TAG))
        .map(|b| root().join(b.trim()))
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_else(root);
    let name = path.file_name()?.to_string_lossy().into_owned();
    let restricted = text
        .lines()
        .take(4)
        .any(|l| l.starts_with(FOUND_TAG) && l.contains(" (restricted): "));
    let overrides = text
        .lines()
        .take_while(|l| l.starts_with("// fuzz-"))
        .filter_map(|l| l.strip_prefix(SET_TAG))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Entry {
        name,
        base,
        text,
        restricted,
        overrides,
    })
}

/// Every `.mapga` file under the shipped folders (`tests/` includes the kept corpus and the
/// fuzzer's regressions and crashes).
fn corpus_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for d in ["pipelines", "examples", "stdlib", "tests"] {
        walk(&root().join(d), &mut paths);
    }
    paths.sort();
    paths.dedup();
    paths
}

fn seed_corpus() -> Vec<Entry> {
    corpus_paths()
        .iter()
        .filter_map(|p| load_entry(p))
        .collect()
}

// ───────────────────────────── dictionary ─────────────────────────────

/// What mutations put in: grammar literals, corpus names and edge-case values.
struct Dict {
    /// Keywords and punctuation from the grammar.
    grammar: Vec<String>,
    /// Every name that appears in the corpus.
    idents: Vec<String>,
    numbers: Vec<&'static str>,
    strings: Vec<&'static str>,
    bytes: Vec<&'static str>,
}

/// The quoted literals of the grammar's rules (comment lines skipped).
fn grammar_literals(grammar: &str) -> Vec<String> {
    let mut out = HashSet::new();
    for line in grammar.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                continue;
            }
            let mut lit = String::new();
            loop {
                match chars.next() {
                    None | Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => lit.push('\n'),
                        Some('r') => lit.push('\r'),
                        Some('t') => lit.push('\t'),
                        Some('u') => {
                            // `\u{FEFF}`
                            let hex: String = chars
                                .by_ref()
                                .skip_while(|&c| c == '{')
                                .take_while(|&c| c != '}')
                                .collect();
                            if let Some(ch) =
                                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                            {
                                lit.push(ch);
                            }
                        }
                        Some(o) => lit.push(o),
                        None => break,
                    },
                    Some(o) => lit.push(o),
                }
            }
            if !lit.is_empty() {
                out.insert(lit);
            }
        }
    }
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort();
    v
}

fn dictionary(corpus: &[Entry]) -> Dict {
    let grammar = std::fs::read_to_string(root().join("grammar/mapga.pest")).unwrap_or_default();
    let mut idents = HashSet::new();
    for e in corpus {
        for (a, b) in tokens(e.text.as_bytes()) {
            let t = &e.text.as_bytes()[a..b];
            if t.first()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            {
                idents.insert(String::from_utf8_lossy(t).into_owned());
            }
        }
    }
    let mut idents: Vec<String> = idents.into_iter().collect();
    idents.sort();
    Dict {
        grammar: grammar_literals(&grammar),
        idents,
        numbers: vec![
            "0",
            "1",
            "-1",
            "2",
            "3",
            "7",
            "28",
            "255",
            "256",
            "1000",
            "65536",
            "0.0",
            "-0.0",
            "0.5",
            "1e-12",
            "1e308",
            "1e309",
            "-1e309",
            "1e-400",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "99999999999999999999999",
            "1_000",
            "1__0",
            "0x10",
            "1.",
            ".5",
            "1e",
            "1e+",
            "00",
        ],
        strings: vec![
            "\"\"",
            "\"x.png\"",
            "\"x.npy\"",
            "\"../data/mnist/test/7.png\"",
            "\"../models/mnist/cm.safetensors\"",
            "\"../models/mnist/cm.ron\"",
            "\"./mnist_restore.mapga\"",
            "\"/dev/zero\"",
            "\"/\"",
            "\".\"",
            "\"..\"",
            "\"\\n\"",
            "\"\\q\"",
            "\"é€𝄞\"",
            "\"unclosed",
            "\"std.solvers.mapga\"",
        ],
        bytes: vec![
            "(", ")", "[", "]", "{", "}", "\"", "\\", "\n", "\r", "\r\n", "\t", " ", ",", ":", ".",
            "=", "-", "/", "///", "//!", "//", "\u{FEFF}", "é", "€", "𝄞", "\u{0}", "\u{7f}",
            "\u{200b}", "\u{2028}", "ﬁ", "Ⅷ", "١", "_", "...", "->", "^", "#", "$", "@", "`",
        ],
    }
}

/// A rough lexer: words, numbers, strings, two- and three-character operators and single
/// characters, as byte ranges; whitespace and `//` comments are left out.
fn tokens(b: &[u8]) -> Vec<(usize, usize)> {
    const OPS: [&[u8]; 13] = [
        b"...", b"==", b"!=", b"<=", b">=", b">>", b"->", b"+=", b"-=", b"*=", b"/=", b"///",
        b"//!",
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"//") && !b[i..].starts_with(b"///") && !b[i..].starts_with(b"//!") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
        } else if let Some(op) = OPS.iter().find(|op| b[i..].starts_with(op)) {
            i += op.len();
        } else {
            i += 1;
            while i < b.len() && (b[i] & 0xC0) == 0x80 {
                i += 1;
            }
        }
        out.push((start, i));
    }
    out
}

/// The byte ranges of the lines of `b`, each with its line break.
fn lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

// ───────────────────────────── mutations ─────────────────────────────

fn pick_token(rng: &mut Rng, d: &Dict) -> String {
    match rng.below(10) {
        0..=3 => d.grammar[rng.below(d.grammar.len())].clone(),
        4..=6 => d
            .idents
            .get(rng.below(d.idents.len()))
            .cloned()
            .unwrap_or_default(),
        7 | 8 => d.numbers[rng.below(d.numbers.len())].to_string(),
        _ => d.strings[rng.below(d.strings.len())].to_string(),
    }
}

/// Applies one mutation to `b`.
fn mutate_once(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[Entry], d: &Dict) {
    let len = b.len();
    match rng.below(20) {
        // Bytes.
        0 | 1 => {
            if len > 0 {
                let at = rng.below(len);
                let n = rng.power(16).min(len - at);
                b.drain(at..at + n);
            }
        }
        2 | 3 => {
            let at = rng.below(len + 1);
            let s: Vec<u8> = if rng.chance(20) {
                vec![rng.below(256) as u8]
            } else {
                d.bytes[rng.below(d.bytes.len())].as_bytes().to_vec()
            };
            b.splice(at..at, s);
        }
        4 => {
            if len > 0 {
                let at = rng.below(len);
                b[at] = if rng.chance(50) {
                    d.bytes[rng.below(d.bytes.len())].as_bytes()[0]
                } else {
                    b[at] ^ (1 << rng.below(8))
                };
            }
        }
        // Tokens.
        5..=8 => {
            let toks = tokens(b);
            if toks.is_empty() {
                return;
            }
            let (s, e) = toks[rng.below(toks.len())];
            let t = pick_token(rng, d);
            b.splice(s..e, t.into_bytes());
        }
        9 | 10 => {
            let toks = tokens(b);
            let at = if toks.is_empty() {
                0
            } else {
                let (s, e) = toks[rng.below(toks.len())];
                if rng.chance(50) {
                    s
                } else {
                    e
                }
            };
            let mut t = pick_token(rng, d);
            if rng.chance(50) {
                t = format!(" {t} ");
            }
            b.splice(at..at, t.into_bytes());
        }
        11 => {
            let toks = tokens(b);
            if !toks.is_empty() {
                let (s, e) = toks[rng.below(toks.len())];
                b.drain(s..e);
            }
        }
        12 => {
            // Duplicate a token, or swap two.
            let toks = tokens(b);
            if toks.len() >= 2 {
                let i = rng.below(toks.len());
                let j = rng.below(toks.len());
                let (x, y) = (toks[i.min(j)], toks[i.max(j)]);
                if rng.chance(50) || i == j {
                    let t = b[x.0..x.1].to_vec();
                    b.splice(x.1..x.1, t);
                } else {
                    let (tx, ty) = (b[x.0..x.1].to_vec(), b[y.0..y.1].to_vec());
                    b.splice(y.0..y.1, tx);
                    b.splice(x.0..x.1, ty);
                }
            }
        }
        // Lines.
        13 => {
            let ls = lines(b);
            if !ls.is_empty() {
                let i = rng.below(ls.len());
                let n = rng.power(8).min(ls.len() - i);
                b.drain(ls[i].0..ls[i + n - 1].1);
            }
        }
        14 => {
            let ls = lines(b);
            if !ls.is_empty() {
                let i = rng.below(ls.len());
                let n = rng.power(4).min(ls.len() - i);
                let (s, e) = (ls[i].0, ls[i + n - 1].1);
                let mut block = b[s..e].to_vec();
                if !block.ends_with(b"\n") {
                    block.push(b'\n');
                }
                // Now and then many times: long files, deep repetition.
                let times = if rng.chance(10) { rng.power(128) } else { 1 };
                let at = ls[rng.below(ls.len())].0;
                let rep: Vec<u8> = block.repeat(times);
                b.splice(at..at, rep);
            }
        }
        15 => {
            let ls = lines(b);
            if ls.len() >= 2 {
                let i = rng.below(ls.len());
                let j = rng.below(ls.len());
                let (x, y) = (ls[i.min(j)], ls[i.max(j)]);
                if x != y {
                    let (tx, ty) = (b[x.0..x.1].to_vec(), b[y.0..y.1].to_vec());
                    b.splice(y.0..y.1, tx);
                    b.splice(x.0..x.1, ty);
                }
            }
        }
        16 | 17 => {
            // A few lines of another corpus file.
            let other = corpus[rng.below(corpus.len())].text.as_bytes();
            let ol = lines(other);
            if !ol.is_empty() {
                let i = rng.below(ol.len());
                let n = rng.power(16).min(ol.len() - i);
                let block = other[ol[i].0..ol[i + n - 1].1].to_vec();
                let ls = lines(b);
                let at = if ls.is_empty() {
                    0
                } else {
                    ls[rng.below(ls.len())].0
                };
                b.splice(at..at, block);
            }
        }
        18 => {
            // Splice: this file's start, another's end.
            let other = corpus[rng.below(corpus.len())].text.as_bytes();
            let ls = lines(b);
            let ol = lines(other);
            if !ls.is_empty() && !ol.is_empty() {
                let cut = ls[rng.below(ls.len())].0;
                let from = ol[rng.below(ol.len())].0;
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
        }
        _ => {
            // Nest: wrap a token range in brackets, or open many.
            let toks = tokens(b);
            if !toks.is_empty() {
                let i = rng.below(toks.len());
                let j = (i + rng.power(8)).min(toks.len() - 1);
                let (s, e) = (toks[i].0, toks[j].1);
                let (o, c) =
                    [("(", ")"), ("[", "]"), ("{", "}"), ("-", ""), ("not ", "")][rng.below(5)];
                let k = rng.power(64);
                let close = if rng.chance(80) {
                    c.repeat(k)
                } else {
                    String::new()
                };
                b.splice(e..e, close.into_bytes());
                b.splice(s..s, o.repeat(k).into_bytes());
            }
        }
    }
}

/// Replaces a token by another of its kind: a name by a name, a number by a number, a string
/// by a string.
fn swap_like(rng: &mut Rng, b: &mut Vec<u8>, d: &Dict) {
    let toks = tokens(b);
    if toks.is_empty() {
        return;
    }
    let (s, e) = toks[rng.below(toks.len())];
    let first = b[s];
    let new = if first.is_ascii_digit() {
        let n = d.numbers[rng.below(d.numbers.len())];
        if rng.chance(50) {
            n.to_string()
        } else {
            // A nearby value: off by one, doubled, negated, or a float of it.
            let t = String::from_utf8_lossy(&b[s..e]).into_owned();
            match rng.below(4) {
                0 => format!("{t}0"),
                1 => format!("-{t}"),
                2 => format!("{t}.5"),
                _ => "1".to_string(),
            }
        }
    } else if first == b'"' {
        d.strings[rng.below(d.strings.len())].to_string()
    } else if first.is_ascii_alphabetic() || first == b'_' {
        // Half the time a name of this file (in scope, of another type), else any name.
        let words: Vec<(usize, usize)> = toks
            .iter()
            .copied()
            .filter(|&(a, _)| b[a].is_ascii_alphabetic() || b[a] == b'_')
            .collect();
        if rng.chance(50) && !words.is_empty() {
            let (a, z) = words[rng.below(words.len())];
            String::from_utf8_lossy(&b[a..z]).into_owned()
        } else {
            d.idents
                .get(rng.below(d.idents.len()))
                .cloned()
                .unwrap_or_default()
        }
    } else {
        return;
    };
    b.splice(s..e, new.into_bytes());
}

/// A new input made from a corpus entry.
fn mutate(rng: &mut Rng, corpus: &[Entry], d: &Dict, max_len: usize) -> Entry {
    let src = &corpus[rng.below(corpus.len())];
    let mut b = src.text.as_bytes().to_vec();
    if rng.chance(30) {
        // Gently: words, numbers and strings replaced by others of their kind, so that the
        // text mostly still parses and the checker sees wrong types, shapes and values.
        for _ in 0..rng.power(4) {
            swap_like(rng, &mut b, d);
        }
    } else {
        for _ in 0..rng.power(16) {
            mutate_once(rng, &mut b, corpus, d);
            if b.len() > max_len {
                b.truncate(max_len);
            }
        }
    }
    // Now and then `--set` overrides: of a param the text declares, or of any name, with a
    // value from the dictionary (a literal, a name, anything).
    let mut overrides = Vec::new();
    if rng.chance(10) {
        let text = String::from_utf8_lossy(&b);
        let params: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("param "))
            .filter_map(|r| r.split(|c: char| !(c.is_alphanumeric() || c == '_')).next())
            .filter(|n| !n.is_empty())
            .collect();
        for _ in 0..rng.power(4) {
            let name = if !params.is_empty() && rng.chance(80) {
                params[rng.below(params.len())].to_string()
            } else {
                pick_token(rng, d)
            };
            let value = pick_token(rng, d);
            // (On one line: findings record them as comment lines.)
            if !name.contains(['\n', '\r']) && !value.contains(['\n', '\r']) {
                overrides.push((name, value));
            }
        }
    }
    Entry {
        name: src.name.clone(),
        base: src.base.clone(),
        text: String::from_utf8_lossy(&b).into_owned(),
        restricted: rng.chance(50),
        overrides,
    }
}

// ───────────────────────────── running one input ─────────────────────────────

/// How one input went.
#[derive(Debug, Clone)]
enum Outcome {
    /// Nothing went wrong; the features of what was found.
    Ok(Vec<u64>),
    /// A step panicked: the step, the panic's message and place.
    Panic { step: &'static str, message: String },
    /// The formatter's output does not parse, or is not a fixed point.
    Format(String),
}

/// The message and place of the last panic, recorded by the panic hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(a panic without a message)".to_string()
        };
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut g) = LAST_PANIC.lock() {
            *g = Some(format!("{msg} at {at}"));
        }
    }));
}

fn hash_of(x: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// A diagnostic's message with the parts that vary (quoted names, numbers) blanked, so that
/// "`x` is not defined" and "`y` is not defined" are one feature.
fn message_shape(m: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in m.chars() {
        if c == '`' {
            quoted = !quoted;
            out.push('`');
        } else if quoted {
            continue;
        } else if c.is_ascii_digit() {
            if !out.ends_with('0') {
                out.push('0');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs one input through every step, catching panics.
fn run_one(e: &Entry) -> Outcome {
    let step = std::cell::Cell::new("parse");
    if let Ok(mut g) = LAST_PANIC.lock() {
        *g = None;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut features = Vec::new();
        let parsed = parse(FileId(0), &e.text);
        features.push(hash_of(("parsed", parsed.diags.has_errors())));
        step.set("format");
        if let Ok(formatted) = format_source(FileId(0), &e.text) {
            // Formatting parses first and refuses text with syntax errors.
            match format_source(FileId(0), &formatted) {
                Ok(twice) if twice == formatted => {}
                Ok(_) => return Err("formatting twice changes the text".to_string()),
                Err(d) => {
                    let first = d.0.first().map(|d| d.message.clone()).unwrap_or_default();
                    return Err(format!(
                        "the formatter's output does not parse: {}",
                        message_shape(&first)
                    ));
                }
            }
        }
        step.set("check");
        let mut opts = CheckOptions::default();
        for (k, v) in &e.overrides {
            opts.overrides.insert(k.clone(), v.clone());
        }
        if e.restricted {
            let out = root().join("target/fuzz/out");
            opts.permissions =
                Permissions::for_pipeline(&e.base.join(&e.name), &out, &opts.overrides);
        }
        let checked = check_source(&e.name, &e.text, &e.base, &opts);
        for d in checked.diags.iter() {
            features.push(hash_of((d.code.to_string(), message_shape(&d.message))));
        }
        for n in &checked.graph.nodes {
            if let Op::Builtin { name, .. } = &n.op {
                features.push(hash_of(("builtin", name)));
            }
        }
        step.set("render");
        let shown = render(&checked.diags.0, &checked.sources, RenderOptions::default());
        let plain = render_plain(&checked.diags.0, &checked.sources);
        features.push(hash_of(("rendered", shown.is_empty(), plain.is_empty())));
        Ok(features)
    }));
    match result {
        Ok(Ok(f)) => Outcome::Ok(f),
        Ok(Err(m)) => Outcome::Format(m),
        Err(_) => {
            let message = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut g| g.take())
                .unwrap_or_else(|| "(no message)".to_string());
            Outcome::Panic {
                step: step.get(),
                message,
            }
        }
    }
}

/// A thread that runs inputs, so that one that never finishes can be left behind.
struct Worker {
    to: Sender<Arc<Entry>>,
    from: Receiver<(Outcome, Duration)>,
}

impl Worker {
    fn start() -> Option<Worker> {
        let (to, rx) = mpsc::channel::<Arc<Entry>>();
        let (tx, from) = mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    let t = Instant::now();
                    let o = run_one(&e);
                    if tx.send((o, t.elapsed())).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Worker { to, from })
    }
}

/// What one run of an input came to, with its time.
#[derive(Debug, Clone)]
enum Verdict {
    Fine(Vec<u64>, Duration),
    Panic(String),
    Hang(Duration),
    Format(String),
}

impl Verdict {
    fn kind(&self) -> &'static str {
        match self {
            Verdict::Fine(..) => "fine",
            Verdict::Panic(_) => "panic",
            Verdict::Hang(_) => "hang",
            Verdict::Format(_) => "format",
        }
    }
}

/// Runs inputs on a [`Worker`] with a watchdog.
struct Runner {
    worker: Option<Worker>,
    time_limit: Duration,
    /// Workers left behind on inputs that did not finish.
    abandoned: usize,
    in_flight: PathBuf,
}

/// Workers stuck on endless inputs after which the run stops (each burns a core).
const MAX_ABANDONED: usize = 2;

impl Runner {
    fn run(&mut self, e: &Entry) -> Verdict {
        // The input on disk first: if the process aborts (a stack overflow), it is not lost.
        let _ = std::fs::write(&self.in_flight, &e.text);
        if self.worker.is_none() {
            self.worker = Worker::start();
        }
        let Some(w) = &self.worker else {
            // No thread: run here, without a watchdog.
            let t = Instant::now();
            return verdict(run_one(e), t.elapsed(), self.time_limit);
        };
        if w.to.send(Arc::new(e.clone())).is_err() {
            self.worker = None;
            return Verdict::Panic("the worker thread is gone".to_string());
        }
        // Far past the limit: the input does not end; leave its thread behind.
        let give_up = self.time_limit * 15;
        match w.from.recv_timeout(give_up) {
            Ok((o, t)) => verdict(o, t, self.time_limit),
            Err(RecvTimeoutError::Timeout) => {
                self.worker = None;
                self.abandoned += 1;
                Verdict::Hang(give_up)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.worker = None;
                Verdict::Panic("the worker thread died".to_string())
            }
        }
    }
}

fn verdict(o: Outcome, t: Duration, limit: Duration) -> Verdict {
    match o {
        Outcome::Panic { step, message } => Verdict::Panic(format!("{step}: {message}")),
        Outcome::Format(m) => Verdict::Format(m),
        Outcome::Ok(_) if t > limit => Verdict::Hang(t),
        Outcome::Ok(f) => Verdict::Fine(f, t),
    }
}

// ───────────────────────────── minimising ─────────────────────────────

/// Does `v` fail the way `first` did? Panics: the same message and place; hangs: again over
/// the limit; format failures: the same complaint.
fn same_failure(first: &Verdict, v: &Verdict) -> bool {
    match (first, v) {
        (Verdict::Panic(a), Verdict::Panic(b)) => a == b,
        (Verdict::Hang(_), Verdict::Hang(_)) => true,
        (Verdict::Format(a), Verdict::Format(b)) => a == b,
        _ => false,
    }
}

/// Deletes lines, then runs of characters, while the input still fails the same way.
fn minimise(runner: &mut Runner, e: &Entry, first: &Verdict) -> Entry {
    let mut best = e.clone();
    // Hangs cost seconds per try; panics and format failures are quick.
    let mut budget = if matches!(first, Verdict::Hang(_)) {
        40
    } else {
        4000
    };
    let mut try_text = |runner: &mut Runner, text: String, best: &mut Entry| -> bool {
        if budget == 0 || runner.abandoned >= MAX_ABANDONED {
            return false;
        }
        budget -= 1;
        let cand = Entry {
            text,
            ..best.clone()
        };
        if same_failure(first, &runner.run(&cand)) {
            *best = cand;
            true
        } else {
            false
        }
    };
    // Lines, in chunks from half the file down to one line.
    let mut chunk = lines(best.text.as_bytes()).len().max(1);
    while chunk >= 1 {
        let mut i = 0;
        loop {
            let ls = lines(best.text.as_bytes());
            if i >= ls.len() {
                break;
            }
            let end = (i + chunk).min(ls.len());
            let mut t = best.text.as_bytes()[..ls[i].0].to_vec();
            t.extend_from_slice(&best.text.as_bytes()[ls[end - 1].1..]);
            let t = String::from_utf8_lossy(&t).into_owned();
            if !try_text(runner, t, &mut best) {
                i += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    // Characters, the same way.
    let mut chunk = (best.text.chars().count() / 2).max(1);
    while chunk >= 1 {
        let mut i = 0;
        loop {
            let cs: Vec<char> = best.text.chars().collect();
            if i >= cs.len() {
                break;
            }
            let end = (i + chunk).min(cs.len());
            let t: String = cs[..i].iter().chain(&cs[end..]).collect();
            if !try_text(runner, t, &mut best) {
                i += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    best
}

/// The comment lines that record how to run `e` again: its base folder, what it is (`found`),
/// whether it ran with restricted permissions, and its overrides.
fn header(e: &Entry, kind: &str, what: &str) -> String {
    let base = e
        .base
        .strip_prefix(root())
        .unwrap_or(&e.base)
        .display()
        .to_string();
    let sets: String = e
        .overrides
        .iter()
        .map(|(k, v)| format!("{SET_TAG}{k}={v}\n"))
        .collect();
    let restricted = if e.restricted { " (restricted)" } else { "" };
    format!(
        "{BASE_TAG}{base}\n{FOUND_TAG}{kind} in {}{restricted}: {what}\n{sets}",
        e.name
    )
}

/// Writes a finding, with its base folder and what happened as comment lines on top (left
/// off if they change the outcome).
fn save_finding(
    runner: &mut Runner,
    dir: &Path,
    e: &Entry,
    v: &Verdict,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let what = match v {
        Verdict::Panic(m) | Verdict::Format(m) => m.lines().next().unwrap_or("").to_string(),
        Verdict::Hang(t) => format!("took {:.1} s", t.as_secs_f64()),
        Verdict::Fine(..) => String::new(),
    };
    let with_header = format!("{}{}", header(e, v.kind(), &what), e.text);
    let tagged = Entry {
        text: with_header.clone(),
        ..e.clone()
    };
    let keep_header = same_failure(v, &runner.run(&tagged));
    let text = if keep_header {
        with_header
    } else {
        e.text.clone()
    };
    let path = dir.join(format!("{}-{:016x}.mapga", v.kind(), hash_of(&e.text)));
    std::fs::write(&path, text)?;
    Ok(path)
}

// ───────────────────────────── main ─────────────────────────────

/// The in-flight inputs in `dir` of fuzzing processes that no longer run (on Linux, where
/// `/proc` tells; elsewhere none are claimed, as another run may still own them).
fn aborted_inputs(dir: &Path) -> Vec<(PathBuf, String)> {
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("in_flight-")
            .and_then(|r| r.strip_suffix(".mapga"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || proc.join(pid).exists() {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path, text));
        }
    }
    out.sort();
    out
}

/// Keeps a small set of the corpus files in `dirs` that together reach every feature they
/// reach beyond the shipped files: greedily, the file that adds the most features not yet
/// reached (the smaller of equals), until none adds any or `max` are kept. Writes them to
/// `into`, which it empties of `.mapga` files first.
fn distill(runner: &mut Runner, dirs: &[PathBuf], into: &Path, max: usize) -> ExitCode {
    let mut covered: HashSet<u64> = HashSet::new();
    // What the shipped files reach is given (the fuzzer's own files under tests/fuzz are not).
    let fuzz_dir = root().join("tests/fuzz");
    for p in corpus_paths().iter().filter(|p| !p.starts_with(&fuzz_dir)) {
        if let Some(e) = load_entry(p) {
            if let Verdict::Fine(f, _) = runner.run(&e) {
                covered.extend(f);
            }
        }
    }
    let mut files = Vec::new();
    for d in dirs {
        walk(d, &mut files);
    }
    let mut cands: Vec<(PathBuf, String, HashSet<u64>)> = Vec::new();
    for f in &files {
        let (Some(e), Ok(raw)) = (load_entry(f), std::fs::read_to_string(f)) else {
            continue;
        };
        match runner.run(&e) {
            Verdict::Fine(feats, _) => {
                let new: HashSet<u64> =
                    feats.into_iter().filter(|x| !covered.contains(x)).collect();
                if !new.is_empty() {
                    cands.push((f.clone(), raw, new));
                }
            }
            other => eprintln!("{}: {} (left out)", f.display(), other.kind()),
        }
    }
    let mut kept: Vec<(PathBuf, String)> = Vec::new();
    while kept.len() < max {
        let best = cands
            .iter()
            .enumerate()
            .map(|(i, (_, raw, f))| {
                (
                    f.iter().filter(|x| !covered.contains(x)).count(),
                    raw.len(),
                    i,
                )
            })
            .filter(|&(gain, _, _)| gain > 0)
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let Some((_, _, i)) = best else {
            break;
        };
        let (path, raw, f) = cands.swap_remove(i);
        covered.extend(f);
        kept.push((path, raw));
    }
    if let Err(e) = std::fs::create_dir_all(into) {
        eprintln!("cannot create {}: {e}", into.display());
        return ExitCode::from(2);
    }
    let mut old = Vec::new();
    walk(into, &mut old);
    for p in old {
        let _ = std::fs::remove_file(p);
    }
    let mut bytes = 0;
    for (path, raw) in &kept {
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        if let Err(e) = std::fs::write(into.join(name), raw) {
            eprintln!("cannot write into {}: {e}", into.display());
            return ExitCode::from(2);
        }
        bytes += raw.len();
    }
    println!(
        "distilled {} files into {} ({} files, {bytes} bytes)",
        files.len(),
        into.display(),
        kept.len()
    );
    ExitCode::SUCCESS
}

fn replay(runner: &mut Runner, files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for f in files {
        let Some(e) = load_entry(f) else {
            eprintln!("{}: cannot read", f.display());
            bad += 1;
            continue;
        };
        let v = runner.run(&e);
        match &v {
            Verdict::Fine(_, t) => println!("{}: fine ({:.3} s)", f.display(), t.as_secs_f64()),
            other => {
                bad += 1;
                println!("{}: {} {other:?}", f.display(), other.kind());
            }
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(m) => {
            eprintln!("{m}");
            return ExitCode::from(2);
        }
    };
    install_panic_hook();
    let fuzz_dir = root().join("target/fuzz");
    if let Err(e) = std::fs::create_dir_all(&fuzz_dir) {
        eprintln!("cannot create {}: {e}", fuzz_dir.display());
        return ExitCode::from(2);
    }
    let in_flight = fuzz_dir.join(format!("in_flight-{}.mapga", std::process::id()));
    // Inputs left over by runs that aborted (their process is gone).
    for (path, text) in aborted_inputs(&fuzz_dir) {
        let saved_as = opts
            .crashes
            .join(format!("abort-{:016x}.mapga", hash_of(&text)));
        let saved = std::fs::create_dir_all(&opts.crashes)
            .and_then(|_| std::fs::write(&saved_as, &text))
            .and_then(|_| std::fs::remove_file(&path));
        match saved {
            Ok(()) => eprintln!(
                "an earlier run aborted while running an input: saved as {}",
                saved_as.display()
            ),
            Err(e) => eprintln!("an earlier run aborted; cannot save its input: {e}"),
        }
    }
    let mut runner = Runner {
        worker: None,
        time_limit: opts.time_limit,
        abandoned: 0,
        in_flight: in_flight.clone(),
    };
    if !opts.distill.is_empty() {
        let Some(into) = &opts.into else {
            eprintln!("--distill needs --into DIR");
            return ExitCode::from(2);
        };
        let code = distill(&mut runner, &opts.distill, into, opts.save_max);
        let _ = std::fs::remove_file(&in_flight);
        return code;
    }
    if !opts.replay.is_empty() {
        let code = replay(&mut runner, &opts.replay);
        let _ = std::fs::remove_file(&in_flight);
        return code;
    }

    let mut corpus = seed_corpus();
    if corpus.is_empty() {
        eprintln!("no .mapga files found under {}", root().display());
        return ExitCode::from(2);
    }
    let dict = dictionary(&corpus);
    let seeds = corpus.len();
    eprintln!(
        "fuzz_check: seed {}, {} inputs, {} corpus files, {} grammar literals, {} names; \
         time limit {:.1} s",
        opts.seed,
        opts.inputs,
        seeds,
        dict.grammar.len(),
        dict.idents.len(),
        opts.time_limit.as_secs_f64()
    );
    let mut rng = Rng(opts.seed);
    let mut seen: HashSet<u64> = HashSet::new();
    // The seeds' own features first: growth counts only what mutants add.
    for e in corpus.clone() {
        if let Verdict::Fine(f, _) = runner.run(&e) {
            seen.extend(f);
        }
    }
    let mut saved_corpus = 0usize;
    let (mut panics, mut hangs, mut formats) = (0u64, 0u64, 0u64);
    let mut found: HashSet<String> = HashSet::new();
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut ran = 0u64;
    while ran < opts.inputs {
        if runner.abandoned >= MAX_ABANDONED {
            eprintln!("stopping: {MAX_ABANDONED} inputs never finished");
            break;
        }
        let input = mutate(&mut rng, &corpus, &dict, opts.max_len);
        let v = runner.run(&input);
        ran += 1;
        match &v {
            Verdict::Fine(features, t) => {
                slowest = slowest.max(*t);
                let mut new = false;
                for f in features {
                    new |= seen.insert(*f);
                }
                if new && input.text.len() <= 16_384 && corpus.len() < 20_000 {
                    if let Some(dir) = &opts.save_corpus {
                        if saved_corpus < opts.save_max && input.text.len() <= 8_192 {
                            let p = dir.join(format!("{:016x}.mapga", hash_of(&input.text)));
                            let text = format!(
                                "{}{}",
                                header(&input, "corpus", "reached something new"),
                                input.text
                            );
                            if std::fs::create_dir_all(dir)
                                .and_then(|_| std::fs::write(&p, text))
                                .is_ok()
                            {
                                saved_corpus += 1;
                            }
                        }
                    }
                    corpus.push(input);
                }
            }
            bad => {
                match bad {
                    Verdict::Hang(t) => {
                        hangs += 1;
                        slowest = slowest.max(*t);
                    }
                    Verdict::Panic(_) => panics += 1,
                    _ => formats += 1,
                }
                let key = match bad {
                    Verdict::Hang(_) => format!("hang {:016x}", hash_of(&input.text)),
                    Verdict::Panic(m) | Verdict::Format(m) => m.clone(),
                    Verdict::Fine(..) => String::new(),
                };
                if found.insert(key) {
                    eprintln!(
                        "input {ran}: {} ({} bytes, from {}): {}",
                        bad.kind(),
                        input.text.len(),
                        input.name,
                        match bad {
                            Verdict::Panic(m) | Verdict::Format(m) => m.clone(),
                            Verdict::Hang(t) => format!("{:.1} s", t.as_secs_f64()),
                            Verdict::Fine(..) => String::new(),
                        }
                    );
                    let small = minimise(&mut runner, &input, bad);
                    match save_finding(&mut runner, &opts.crashes, &small, bad) {
                        Ok(p) => {
                            eprintln!("  minimised to {} bytes: {}", small.text.len(), p.display())
                        }
                        Err(e) => eprintln!("  cannot save it: {e}"),
                    }
                }
            }
        }
        if last_progress.elapsed() >= opts.progress {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "[{:>7.0} s] {ran}/{} inputs, {panics} panics, {hangs} hangs, {formats} format, \
                 corpus {}, {:.0} inputs/s, slowest {:.2} s",
                secs,
                opts.inputs,
                corpus.len(),
                ran as f64 / secs.max(1e-9),
                slowest.as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_file(&in_flight);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz_check: {ran} inputs in {secs:.0} s ({:.0} inputs/s), seed {}: {panics} panics, \
         {hangs} hangs, {formats} format failures ({} distinct); slowest input {:.2} s; corpus \
         {} ({} seeds, {} grown{})",
        ran as f64 / secs.max(1e-9),
        opts.seed,
        found.len(),
        slowest.as_secs_f64(),
        corpus.len(),
        seeds,
        corpus.len() - seeds,
        if opts.save_corpus.is_some() {
            format!(", {saved_corpus} saved")
        } else {
            String::new()
        }
    );
    if panics + hangs + formats == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
