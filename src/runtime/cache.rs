//! The node cache: values of top-level graph nodes kept from one run to the next, keyed by
//! their content, so a front end that runs a pipeline again and again (`mapga watch`, sweeps)
//! recomputes only what an edit changed.
//!
//! # Keys
//!
//! The key of a top-level node is a SHA-256 digest, computed bottom-up like a Merkle tree:
//!
//! - what the node does: its operation with its literals (constants, param values, built-in,
//!   method and field names) and its type; a loop, branch, optimization or function call
//!   includes the digest of every node of the regions it runs (the called function's body,
//!   nested loops), so editing a solver in the standard library or a user module changes the
//!   keys of the nodes that call it;
//! - the keys of its inputs, and of every top-level node its regions read;
//! - the content of every file it reads: a string literal that names a file (relative to the
//!   file it is written in, as built-ins resolve it) adds the SHA-256 of that file, and of the
//!   model card beside a `.safetensors`; a computed string passed to a top-level node does too;
//! - the run's root seed, dtype and device. Random draws depend only on these and on the
//!   `seed` arguments written in the program (see [`crate::random`]), which are inputs.
//!
//! Spans (lines and columns) and node ids are not part of a key: adding a comment or a line
//! above a node does not invalidate it. So a changed step size changes the keys of the solver
//! call and of what depends on it (reports, saves), and nothing else: the measurement, the
//! masks and the loaded models come from the cache.
//!
//! # What is kept
//!
//! Only top-level nodes that compute something (built-in calls, function calls, operators,
//! arithmetic, loops) are stored; constants, params, tuples and projections run again, which
//! costs nothing. Values inside loops and solver bodies are never cached: the top-level node
//! that runs them is. A value that refers to the program itself (a function value, or an
//! operator built from a user function) is not stored, since it would outlive its program.
//!
//! The cache holds what the last completed run used: when a run completes, the entries it did
//! not use are dropped, so memory stays about one run's top-level values (a cancelled run drops
//! nothing, and may add the entries it finished). [`NodeCache::keeping`] keeps the entries of
//! more runs. Models are values like any other: a model
//! whose file and card did not change is served loaded; one whose file changed is loaded
//! again, because its key changed.
//!
//! Each entry keeps the network evaluations its computation made, and a run served from the
//! cache counts them again, so `run.ron` and the tables of a sweep report what the pipeline
//! costs, whether or not its values came from the cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::interp::{owned_regions, Env, Interp, Program};
use super::value::Value;
use crate::diffusion::nfe::{self, NetworkEvaluations};
use crate::graph::{Const, Graph, NodeId, Op, RegionId};
use crate::source::{SourceMap, Span};

/// The content key of a node: a SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Values of top-level nodes kept across runs, shared by every run a front end makes (see the
/// module documentation). Cheap to share: hold it in an `Arc` and pass it to
/// [`super::run_cached`] for each run.
pub struct NodeCache {
    store: Mutex<Store>,
    /// A completed run keeps the entries used by it and the `keep - 1` runs begun before it.
    keep: u64,
}

impl Default for NodeCache {
    fn default() -> Self {
        NodeCache::keeping(1)
    }
}

#[derive(Default)]
struct Store {
    entries: HashMap<Key, Entry>,
    files: FileDigests,
    /// The number of runs begun.
    runs: u64,
}

struct Entry {
    value: Value,
    /// The last run that used it.
    run: u64,
    /// Seconds it took to compute.
    seconds: f64,
    /// The network evaluations its computation made.
    evaluations: NetworkEvaluations,
}

/// What a run took from the cache and what it computed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheStats {
    /// Top-level nodes that computed their value.
    pub recomputed: usize,
    /// Top-level nodes served from the cache.
    pub from_cache: usize,
    /// Models (and classifiers) served loaded from the cache.
    pub models_cached: usize,
    /// Models (and classifiers) loaded from their files.
    pub models_loaded: usize,
    /// Seconds the nodes served from the cache took when they were computed.
    pub saved_seconds: f64,
    /// The source of each recomputed node, in run order.
    pub recomputed_at: Vec<Span>,
}

impl NodeCache {
    /// An empty cache that keeps what the last completed run used.
    pub fn new() -> Self {
        NodeCache::default()
    }

    /// An empty cache that keeps, when a run completes, the entries used by it or by the
    /// `runs - 1` runs begun before it (at least 1): for front ends whose consecutive runs
    /// share less, such as a sweep over several params.
    pub fn keeping(runs: u64) -> Self {
        NodeCache {
            store: Mutex::new(Store::default()),
            keep: runs.max(1),
        }
    }

    /// The number of values held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every value (and every remembered file digest).
    pub fn clear(&self) {
        let mut s = self.lock();
        s.entries.clear();
        s.files = FileDigests::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A run that panicked while holding the lock left whole entries: keep using them.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts serving one run of `prog`.
    pub(crate) fn begin<'a>(&'a self, prog: &'a Program) -> Session<'a> {
        let (files, run) = {
            let mut s = self.lock();
            s.runs += 1;
            (std::mem::take(&mut s.files), s.runs)
        };
        Session {
            cache: self,
            run,
            state: RefCell::new(SessionState {
                keys: Keys::new(&prog.graph, &prog.sources, &prog.env, files),
                served: HashMap::new(),
                stats: CacheStats::default(),
            }),
        }
    }
}

/// One run's use of the cache: serves top-level nodes before they run and stores them after.
pub(crate) struct Session<'a> {
    cache: &'a NodeCache,
    run: u64,
    state: RefCell<SessionState<'a>>,
}

struct SessionState<'a> {
    keys: Keys<'a>,
    /// The key of each top-level node that computes something, whether it was served, and
    /// when it was offered (its computation starts then).
    served: HashMap<NodeId, (Key, bool, Instant, NetworkEvaluations)>,
    stats: CacheStats,
}

impl Session<'_> {
    /// The cached value of top-level node `n`, if there is one (before it runs).
    pub(crate) fn serve(&self, it: &Interp, n: NodeId) -> Option<Value> {
        let mut st = self.state.borrow_mut();
        let node = it.prog.graph.node(n);
        let mut key = st.keys.top_level(n);
        if !computes(&node.op) {
            return None;
        }
        // A file named by a computed string read by this node.
        let base = it.prog.base_dir(node.span);
        let mut extra = Vec::new();
        for &i in &node.inputs {
            if let Some(Value::Str(s)) = it.value(i) {
                extra.push(st.keys.files.of_written(&base, s));
            }
        }
        if extra.iter().any(Option::is_some) {
            key = digest(|h| {
                h.update(b"files");
                h.update(key.0);
                for d in &extra {
                    put_opt(h, d);
                }
            });
        }
        let hit = {
            let mut s = self.cache.lock();
            s.entries.get_mut(&key).map(|e| {
                e.run = self.run;
                (e.value.clone(), e.seconds, e.evaluations)
            })
        };
        st.served
            .insert(n, (key, hit.is_some(), Instant::now(), nfe::peek()));
        let (value, seconds, evaluations) = hit?;
        nfe::add(evaluations);
        st.stats.from_cache += 1;
        st.stats.saved_seconds += seconds;
        if matches!(value, Value::Model(_) | Value::Classifier(_)) {
            st.stats.models_cached += 1;
        }
        Some(value)
    }

    /// Records top-level node `n` after it ran (or was served): stores a computed value.
    pub(crate) fn record(&self, it: &Interp, n: NodeId) {
        let mut st = self.state.borrow_mut();
        let Some(&(key, served, started, before)) = st.served.get(&n) else {
            return;
        };
        if served {
            return;
        }
        let Some(value) = it.value(n) else {
            return;
        };
        st.stats.recomputed += 1;
        st.stats.recomputed_at.push(it.prog.graph.node(n).span);
        if matches!(value, Value::Model(_) | Value::Classifier(_)) {
            st.stats.models_loaded += 1;
        }
        if cacheable(value, st.keys.refers_to_program(n)) {
            self.cache.lock().entries.insert(
                key,
                Entry {
                    value: value.clone(),
                    run: self.run,
                    seconds: started.elapsed().as_secs_f64(),
                    evaluations: nfe::peek().since(&before),
                },
            );
        }
    }

    /// Ends the run: a completed run drops the entries it did not use. Returns its counts.
    pub(crate) fn finish(self, completed: bool) -> CacheStats {
        let st = self.state.into_inner();
        let mut s = self.cache.lock();
        s.files = st.keys.files;
        if completed {
            let oldest = (self.run + 1).saturating_sub(self.cache.keep);
            s.entries.retain(|_, e| e.run >= oldest);
        }
        st.stats
    }
}

/// True for the operations worth caching: those that compute. Constants, params, inputs,
/// function values, tuples, lists, projections and fields run again at no cost.
fn computes(op: &Op) -> bool {
    !matches!(
        op,
        Op::Const(_)
            | Op::Param(_)
            | Op::Input(_)
            | Op::Lambda { .. }
            | Op::Tuple
            | Op::List
            | Op::Project(_)
            | Op::Field(_)
    )
}

/// True when a value can outlive its program: no function values, and no operators when the
/// node may have built one from a user function (`refers_to_program`).
fn cacheable(v: &Value, refers_to_program: bool) -> bool {
    match v {
        Value::Fn(_) => false,
        Value::Operator(_) => !refers_to_program,
        Value::Tuple(xs) | Value::List(xs) => xs.iter().all(|x| cacheable(x, refers_to_program)),
        _ => true,
    }
}

/// Digests of files, remembered by size and modification time so an unchanged file is read
/// once. File times are coarse (a few milliseconds), so a digest taken less than
/// [`RACY`] after the file's modification time is not trusted later: two writes in one tick
/// would look the same (git's "racy" files).
#[derive(Default)]
struct FileDigests {
    known: HashMap<PathBuf, (u64, SystemTime, [u8; 32])>,
}

/// How long after its modification a file's digest is trusted by size and time alone.
const RACY: std::time::Duration = std::time::Duration::from_secs(2);

impl FileDigests {
    /// The digest of the file at `path` (and of its model card for a weights file), or `None`
    /// when it is not a readable file.
    fn of(&mut self, path: &Path) -> Option<[u8; 32]> {
        let own = self.one(path)?;
        let model_file = ["safetensors", "pt", "pth", "bin", "ckpt"]
            .iter()
            .any(|m| path.extension().is_some_and(|e| e == *m));
        if model_file {
            let card = self.one(&crate::models::card::card_path_for(path));
            return Some(
                digest(|h| {
                    h.update(own);
                    put_opt(h, &card);
                })
                .0,
            );
        }
        Some(own)
    }

    /// The digest of a path as a program writes it, relative to `base`.
    fn of_written(&mut self, base: &Path, written: &str) -> Option<[u8; 32]> {
        let p = Path::new(written);
        if p.is_absolute() {
            self.of(p)
        } else {
            self.of(&base.join(p))
        }
    }

    fn one(&mut self, path: &Path) -> Option<[u8; 32]> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let modified = meta.modified().ok();
        if let (Some(&(len, when, d)), Some(modified)) = (self.known.get(path), modified) {
            if len == meta.len() && when == modified {
                return Some(d);
            }
        }
        let read_at = SystemTime::now();
        let bytes = std::fs::read(path).ok()?;
        let d: [u8; 32] = Sha256::digest(&bytes).into();
        match modified {
            Some(m) if read_at.duration_since(m).is_ok_and(|age| age > RACY) => {
                self.known.insert(path.to_path_buf(), (meta.len(), m, d));
            }
            _ => {
                self.known.remove(path);
            }
        }
        Some(d)
    }
}

fn digest(f: impl FnOnce(&mut Sha256)) -> Key {
    let mut h = Sha256::new();
    f(&mut h);
    Key(h.finalize().into())
}

/// Writes a length-prefixed string, so that consecutive strings cannot run together.
fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn put_opt(h: &mut Sha256, d: &Option<[u8; 32]>) {
    match d {
        Some(d) => {
            h.update([1]);
            h.update(d);
        }
        None => h.update([0]),
    }
}

/// Computes the content keys of a graph's nodes (see the module documentation).
pub struct Keys<'g> {
    graph: &'g Graph,
    sources: &'g SourceMap,
    env: Key,
    region_of: Vec<RegionId>,
    /// Nesting depth of each region below the region it can refer into: 0 for the top level,
    /// function bodies and function values (which capture nothing), one more per loop or
    /// branch. It tells apart the inputs of nested regions.
    level: Vec<u32>,
    top: HashMap<NodeId, Key>,
    /// Inner nodes' keys, and whether each involves a function value.
    inner: HashMap<NodeId, (Key, bool)>,
    regions: HashMap<RegionId, (Key, bool)>,
    /// Whether each top-level node's computation involves a function value.
    program_refs: HashMap<NodeId, bool>,
    files: FileDigests,
}

impl<'g> Keys<'g> {
    /// Keys of `graph` for runs in `env`; `sources` resolve the paths written in each file.
    pub fn for_graph(graph: &'g Graph, sources: &'g SourceMap, env: &Env) -> Self {
        Keys::new(graph, sources, env, FileDigests::default())
    }

    fn new(graph: &'g Graph, sources: &'g SourceMap, env: &Env, files: FileDigests) -> Self {
        let mut region_of = vec![Graph::MAIN; graph.nodes.len()];
        for (r, region) in graph.regions.iter().enumerate() {
            for n in &region.nodes {
                region_of[n.0 as usize] = RegionId(r as u32);
            }
        }
        let mut level = vec![0u32; graph.regions.len()];
        let mut stack = vec![Graph::MAIN];
        stack.extend(graph.functions.iter().map(|f| f.body));
        let mut seen = vec![false; graph.regions.len()];
        while let Some(r) = stack.pop() {
            if std::mem::replace(&mut seen[r.0 as usize], true) {
                continue;
            }
            for n in &graph.region(r).nodes {
                let op = &graph.node(*n).op;
                for child in owned_regions(op) {
                    level[child.0 as usize] = match op {
                        Op::Lambda { .. } => 0,
                        _ => level[r.0 as usize] + 1,
                    };
                    stack.push(child);
                }
            }
        }
        let env = digest(|h| {
            h.update(b"mapga-cache-v1");
            h.update(env.seed.to_le_bytes());
            put_str(h, &format!("{:?}", env.dtype));
            put_str(h, &format!("{:?}", env.device.location()));
        });
        Keys {
            graph,
            sources,
            env,
            region_of,
            level,
            top: HashMap::new(),
            inner: HashMap::new(),
            regions: HashMap::new(),
            program_refs: HashMap::new(),
            files,
        }
    }

    /// The key of every top-level node, in run order.
    pub fn all_top_level(&mut self) -> Vec<(NodeId, Key)> {
        let nodes = self.graph.region(Graph::MAIN).nodes.clone();
        nodes.into_iter().map(|n| (n, self.top_level(n))).collect()
    }

    /// The key of top-level node `n`.
    pub fn top_level(&mut self, n: NodeId) -> Key {
        if let Some(k) = self.top.get(&n) {
            return *k;
        }
        let node = self.graph.node(n);
        let (what, refs) = self.op_digest(n);
        let inputs: Vec<Key> = node.inputs.iter().map(|&i| self.reference(i)).collect();
        let refs = refs
            || node.inputs.iter().any(|i| {
                self.region_of[i.0 as usize] == Graph::MAIN
                    && self.program_refs.get(i).copied().unwrap_or(false)
            });
        let key = digest(|h| {
            h.update(b"top");
            h.update(self.env.0);
            h.update(what.0);
            for k in &inputs {
                h.update(k.0);
            }
        });
        self.top.insert(n, key);
        self.program_refs.insert(n, refs);
        key
    }

    /// True when top-level node `n` may have built its value from a function value (its key
    /// must have been computed).
    fn refers_to_program(&self, n: NodeId) -> bool {
        self.program_refs.get(&n).copied().unwrap_or(true)
    }

    /// The key a node is referred to by: a top-level node's key, or an inner node's.
    fn reference(&mut self, n: NodeId) -> Key {
        if self.region_of[n.0 as usize] == Graph::MAIN {
            self.top_level(n)
        } else {
            self.inner_key(n).0
        }
    }

    /// The key of a node inside a region (what it does and what it reads), and whether it
    /// involves a function value.
    fn inner_key(&mut self, n: NodeId) -> (Key, bool) {
        if let Some(k) = self.inner.get(&n) {
            return *k;
        }
        let node = self.graph.node(n);
        let (what, refs) = self.op_digest(n);
        let inputs: Vec<Key> = node.inputs.iter().map(|&i| self.reference(i)).collect();
        let key = digest(|h| {
            h.update(b"node");
            h.update(what.0);
            for k in &inputs {
                h.update(k.0);
            }
        });
        self.inner.insert(n, (key, refs));
        (key, refs)
    }

    /// The digest of what a node does (operation, literals, type, regions it runs, files its
    /// string literal names), and whether it involves a function value.
    fn op_digest(&mut self, n: NodeId) -> (Key, bool) {
        let node = self.graph.node(n);
        let mut regions = Vec::new();
        let mut refs = false;
        for r in owned_regions(&node.op) {
            let (k, lambda) = self.region_digest(r);
            regions.push(k);
            refs |= lambda;
        }
        let mut file = None;
        let mut callee = None;
        match &node.op {
            Op::Const(Const::Str(s)) => {
                let base = self.sources.get(node.span.file).base_dir();
                file = Some(self.files.of_written(&base, s));
            }
            Op::Call(f) => {
                if let Some(func) = self.graph.functions.get(f.0 as usize) {
                    let (k, lambda) = self.region_digest(func.body);
                    refs |= lambda;
                    callee = Some((func.name.clone(), func.module.clone(), k));
                }
            }
            Op::Lambda { .. } => refs = true,
            _ => {}
        }
        let op_text = match &node.op {
            // Region and function ids differ between checks; their content is hashed instead.
            Op::If { .. } => "if".to_string(),
            Op::For { .. } => "for".to_string(),
            Op::Repeat { .. } => "repeat".to_string(),
            Op::Lambda { .. } => "fn".to_string(),
            Op::Optimize { direction, .. } => format!("optimize {direction:?}"),
            Op::Call(_) => "call".to_string(),
            Op::Input(i) => format!(
                "input {i} at level {}",
                self.level[self.region_of[n.0 as usize].0 as usize]
            ),
            Op::Param(name) => {
                let value = self
                    .graph
                    .params
                    .iter()
                    .find(|p| &p.name == name)
                    .map(|p| p.value.clone());
                format!("param {name} = {value:?}")
            }
            other => format!("{other:?}"),
        };
        let key = digest(|h| {
            put_str(h, &op_text);
            put_str(h, &format!("{:?}", node.ty));
            for k in &regions {
                h.update(k.0);
            }
            if let Some((name, module, k)) = &callee {
                put_str(h, name);
                put_str(h, module);
                h.update(k.0);
            }
            if let Some(d) = &file {
                put_opt(h, d);
            }
        });
        (key, refs)
    }

    /// The digest of a region (its inputs and every node, in order) and whether it or a
    /// region it runs holds a function value.
    fn region_digest(&mut self, r: RegionId) -> (Key, bool) {
        if let Some(d) = self.regions.get(&r) {
            return *d;
        }
        // The checker rejects recursion; this guards against a cycle all the same.
        self.regions.insert(r, (Key([0; 32]), true));
        let region = self.graph.region(r);
        let mut lambda = false;
        let mut nodes = Vec::with_capacity(region.nodes.len());
        for &n in &region.nodes {
            let (k, refs) = self.inner_key(n);
            nodes.push(k);
            lambda |= refs;
        }
        let outputs: Vec<Key> = region.outputs.iter().map(|&o| self.reference(o)).collect();
        let key = digest(|h| {
            h.update(b"region");
            h.update(self.level[r.0 as usize].to_le_bytes());
            h.update(region.inputs.to_le_bytes());
            for k in nodes.iter().chain(&outputs) {
                h.update(k.0);
            }
        });
        self.regions.insert(r, (key, lambda));
        (key, lambda)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use candle_core::{DType, Device, Tensor};

    use super::{Env, Key, Keys};
    use crate::check::{check_source, CheckOptions};

    /// The source text and key of every top-level node of `source` (checked in `dir`).
    fn keys_in(dir: &std::path::Path, source: &str, seed: u64) -> Vec<(String, Key)> {
        let checked = check_source("p.mapga", source, dir, &CheckOptions::default());
        assert!(!checked.diags.has_errors(), "{:?}", checked.diags.0);
        let env = Env {
            device: Device::Cpu,
            dtype: DType::F32,
            seed,
        };
        let mut keys = Keys::for_graph(&checked.graph, &checked.sources, &env);
        keys.all_top_level()
            .into_iter()
            .map(|(n, key)| {
                let span = checked.graph.node(n).span;
                let text = &checked.sources.get(span.file).text;
                (
                    text[span.start as usize..span.end as usize].to_string(),
                    key,
                )
            })
            .collect()
    }

    fn keys(source: &str) -> Vec<(String, Key)> {
        keys_in(&std::env::temp_dir(), source, 0)
    }

    /// The texts of the nodes whose keys differ (the programs have the same nodes).
    fn changed(a: &[(String, Key)], b: &[(String, Key)]) -> BTreeSet<String> {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0.clone())
            .collect()
    }

    const PARAMS: &str = r#"param a = 1.0
param b = 2.0
let x = zeros(shape(1, 4, 4)) + a
let y = zeros(shape(1, 4, 4)) + b
let z = x * 2.0
report sum(y) as "y", sum(z) as "z"
"#;

    #[test]
    fn a_param_changes_exactly_the_keys_that_depend_on_it() {
        let before = keys(PARAMS);
        let after = keys(&PARAMS.replace("a = 1.0", "a = 3.0"));
        // The default's literal (`1.0` before), the param's node (`a`), and what uses them;
        // nothing of `b`.
        let expected: BTreeSet<String> =
            ["1.0", "a", "zeros(shape(1, 4, 4)) + a", "x * 2.0", "sum(z)"]
                .into_iter()
                .map(String::from)
                .collect();
        assert_eq!(changed(&before, &after), expected);
    }

    #[test]
    fn spans_do_not_matter_and_the_seed_changes_every_key() {
        let before = keys(PARAMS);
        let moved = keys(&format!("// a comment\n\n{PARAMS}"));
        assert_eq!(
            before.iter().map(|k| k.1).collect::<Vec<_>>(),
            moved.iter().map(|k| k.1).collect::<Vec<_>>()
        );
        let seeded = keys_in(&std::env::temp_dir(), PARAMS, 1);
        assert!(before.iter().zip(&seeded).all(|(a, b)| a.1 != b.1));
    }

    #[test]
    fn a_function_body_changes_only_its_callers() {
        let source = r#"fn f(x: Float) -> Float {
    x * 2.0
}

fn g(x: Float) -> Float {
    x + 1.0
}

let u = f(1.0)
let v = g(1.0)
report u as "u", v as "v"
"#;
        let got = changed(&keys(source), &keys(&source.replace("x * 2.0", "x * 3.0")));
        // `report u` reads the node of `f(1.0)`: no node of its own.
        assert_eq!(got, BTreeSet::from(["f(1.0)".to_string()]));
    }

    #[test]
    fn loop_bodies_are_part_of_the_key() {
        let source = r#"fn total() -> Float {
    var t = 0.0
    for k in [1.0, 2.0] {
        t += k
    }
    t
}

report total() as "t"
"#;
        let got = changed(
            &keys(source),
            &keys(&source.replace("t += k", "t += 2.0 * k")),
        );
        assert!(got.contains("total()"), "{got:?}");
    }

    /// Runs `source` in `dir` with `cache`.
    fn run_with(
        dir: &std::path::Path,
        source: &str,
        cache: &super::NodeCache,
    ) -> super::CacheStats {
        let checked = check_source("p.mapga", source, dir, &CheckOptions::default());
        assert!(!checked.diags.has_errors(), "{:?}", checked.diags.0);
        let opts = crate::runtime::RunOptions {
            out_dir: dir.join("out"),
            env: Env {
                device: Device::Cpu,
                dtype: DType::F32,
                seed: 0,
            },
            observer: None,
            check_seconds: 0.0,
        };
        let summary = crate::runtime::run_cached(&checked, &dir.join("p.mapga"), &opts, cache)
            .unwrap_or_else(|f| panic!("{}", f.error.message));
        summary.cache
    }

    #[test]
    fn runs_share_the_cache_and_keep_only_what_they_use() {
        let dir = std::env::temp_dir().join(format!("mapga-cache-runs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No two nodes alike (alike nodes share one entry, even within a run).
        let source = PARAMS.replace("let y = zeros(shape(1, 4, 4))", "let y = ones(shape(2, 2))");
        let cache = super::NodeCache::new();
        let first = run_with(&dir, &source, &cache);
        assert_eq!((first.from_cache, first.saved_seconds), (0, 0.0));
        let computed = first.recomputed;
        assert_eq!(computed, 9, "{first:?}");
        let again = run_with(&dir, &source, &cache);
        assert_eq!((again.recomputed, again.from_cache), (0, computed));
        // `a` feeds `+ a`, `x * 2.0` and `sum(z)`: those run again, the rest is served.
        let changed = run_with(&dir, &source.replace("a = 1.0", "a = 3.0"), &cache);
        assert_eq!(changed.recomputed, 3, "{changed:?}");
        assert_eq!(changed.from_cache, computed - 3);
        // The entries of the old `a` were dropped: the cache holds one run's values.
        assert_eq!(cache.len(), computed);
        let keeping = super::NodeCache::keeping(2);
        run_with(&dir, &source, &keeping);
        run_with(&dir, &source.replace("a = 1.0", "a = 3.0"), &keeping);
        assert_eq!(keeping.len(), computed + 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_read_is_keyed_by_its_content() {
        let dir = std::env::temp_dir().join(format!("mapga-cache-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let npy = dir.join("m.npy");
        let write = |v: f32| {
            let t = Tensor::full(v, (2, 2), &Device::Cpu).unwrap();
            crate::io::write_npy(&npy, &t).unwrap();
        };
        let source =
            "let m = load_npy(\"m.npy\")\nlet k = zeros(shape(2, 2))\nreport sum(m + k) as \"s\"\n";
        write(1.0);
        let before = keys_in(&dir, source, 0);
        write(2.0);
        let after = keys_in(&dir, source, 0);
        let got = changed(&before, &after);
        assert!(got.contains("load_npy(\"m.npy\")"), "{got:?}");
        assert!(!got.contains("zeros(shape(2, 2))"), "{got:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
