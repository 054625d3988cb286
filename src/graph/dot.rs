//! Graphviz DOT rendering of a typed graph: one cluster per region, one box per node.

use std::fmt::Write;

use super::{Const, Graph, Op, RegionId};

/// A short label for a node's operation.
fn op_label(op: &Op) -> String {
    match op {
        Op::Const(c) => match c {
            Const::Str(s) => format!("{s:?}"),
            Const::Int(i) => i.to_string(),
            Const::Float(f) => format!("{f}"),
            Const::Bool(b) => b.to_string(),
            Const::Unit => "()".into(),
            Const::List(_) => "[list]".into(),
            Const::Tuple(_) => "(tuple)".into(),
        },
        Op::Param(n) => format!("param {n}"),
        Op::Input(i) => format!("input {i}"),
        Op::Builtin { name, .. } => name.clone(),
        Op::Call(f) => format!("call #{}", f.0),
        Op::Apply => "apply".into(),
        Op::Method(m) => format!(".{m}()"),
        Op::Field(f) => format!(".{f}"),
        Op::Index => "index".into(),
        Op::Slice { .. } => "slice".into(),
        Op::Project(i) => format!(".{i}"),
        Op::Unary(u) => u.as_str().trim().into(),
        Op::Binary(b) => b.as_str().into(),
        Op::Tuple => "tuple".into(),
        Op::List => "list".into(),
        Op::If { .. } => "if".into(),
        Op::For { .. } => "for".into(),
        Op::Repeat { .. } => "repeat".into(),
        Op::Optimize { direction, .. } => format!("{direction:?}").to_lowercase(),
        Op::Lambda { .. } => "fn".into(),
    }
}

/// Escapes a label for a double-quoted DOT string.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders the graph as DOT text (`dot -Tsvg` draws it).
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from("digraph mapga {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    for (ri, region) in g.regions.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{ri} {{\n    label=\"{}\";",
            esc(&region.label)
        );
        for id in &region.nodes {
            let n = g.node(*id);
            let _ = writeln!(
                out,
                "    n{} [label=\"{}\\n{}\"];",
                id.0,
                esc(&op_label(&n.op)),
                esc(&n.ty.to_string())
            );
        }
        out.push_str("  }\n");
    }
    for (i, n) in g.nodes.iter().enumerate() {
        for inp in &n.inputs {
            let _ = writeln!(out, "  n{} -> n{i};", inp.0);
        }
        let regions: Vec<RegionId> = match &n.op {
            Op::If { then, otherwise } => vec![*then, *otherwise],
            Op::For { body }
            | Op::Repeat { body }
            | Op::Optimize { body, .. }
            | Op::Lambda { body } => vec![*body],
            _ => vec![],
        };
        for r in regions {
            for o in &g.region(r).outputs {
                let _ = writeln!(out, "  n{} -> n{i} [style=dashed];", o.0);
            }
        }
    }
    for f in &g.functions {
        for o in &g.region(f.body).outputs {
            let _ = writeln!(out, "  n{} [peripheries=2];", o.0);
        }
    }
    out.push_str("}\n");
    out
}
