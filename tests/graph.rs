//! The typed graph a program lowers to: regions for loops and optimization steps, carried
//! variables, specialised functions, shapes known before running, and serde round trips.

use std::path::Path;

use mapga::check::types::Type;
use mapga::check::{check_source, CheckOptions, Checked};
use mapga::graph::{Graph, Op};

fn check(text: &str) -> Checked {
    let checked = check_source("t.mapga", text, Path::new("."), &CheckOptions::default());
    let errors: Vec<_> = checked.diags.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    checked
}

fn ops<'a>(
    g: &'a Graph,
    f: impl Fn(&Op) -> bool + 'a,
) -> impl Iterator<Item = &'a mapga::graph::Node> + 'a {
    g.nodes.iter().filter(move |n| f(&n.op))
}

const SOLVER: &str = r#"
fn solve(y: Tensor, A: Operator, steps: Int = 3) -> Tensor {
    var z = zeros(A.domain)
    for (t, t_next) in karras(steps: steps).pairs {
        descend z with adam(lr: 0.1) for 5 steps {
            let r = A(z) - y
            minimize dot(r, r) + t * 0.0
        }
        z = z * 0.5 + t_next * 0.0
    }
    z
}

let A = downsample(2)
let y = A(gaussian_like(shape(1, 28, 28), seed: 3))
let x = solve(y, A)
let x2 = solve(y, A)
report norm(x - x2)
"#;

#[test]
fn loops_carry_the_variables_they_assign() {
    let c = check(SOLVER);
    let g = &c.graph;
    let for_node = ops(g, |o| matches!(o, Op::For { .. }))
        .next()
        .expect("a for node");
    let Op::For { body } = for_node.op else {
        unreachable!()
    };
    // Input 0 is the sequence, input 1 the initial z; the body yields the new z.
    assert_eq!(for_node.inputs.len(), 2);
    assert_eq!(g.region(body).inputs, 2);
    assert_eq!(g.region(body).outputs.len(), 1);
    assert_eq!(for_node.ty.to_string(), "(Tensor[1, 28, 28],)");
}

#[test]
fn optimization_steps_own_their_objective_region() {
    let c = check(SOLVER);
    let g = &c.graph;
    let opt = ops(g, |o| matches!(o, Op::Optimize { .. }))
        .next()
        .expect("an optimize node");
    let Op::Optimize { body, .. } = opt.op else {
        unreachable!()
    };
    assert_eq!(opt.inputs.len(), 3, "variable, optimizer, steps");
    assert_eq!(g.region(body).inputs, 1);
    let objective = g.node(g.region(body).outputs[0]);
    assert_eq!(objective.ty, Type::Float);
    assert_eq!(opt.ty.to_string(), "Tensor[1, 28, 28]");
}

#[test]
fn a_function_is_specialised_once_per_argument_types() {
    let c = check(SOLVER);
    assert_eq!(
        c.graph.functions.len(),
        1,
        "both calls share one specialisation"
    );
    let calls: Vec<_> = ops(&c.graph, |o| matches!(o, Op::Call(_))).collect();
    assert_eq!(calls.len(), 2);
    // The downsampling's domain was inferred from y through the function body.
    for call in calls {
        assert_eq!(call.ty.to_string(), "Tensor[1, 28, 28]");
    }
}

#[test]
fn different_argument_shapes_give_different_specialisations() {
    let c = check(
        r#"
fn double(x: Tensor) -> Tensor { x + x }
let a = double(zeros(shape(1, 4, 4)))
let b = double(zeros(shape(3, 8, 8)))
report sum(a) + sum(b)
"#,
    );
    assert_eq!(c.graph.functions.len(), 2);
    let types: Vec<String> = ops(&c.graph, |o| matches!(o, Op::Call(_)))
        .map(|n| n.ty.to_string())
        .collect();
    assert_eq!(types, ["Tensor[1, 4, 4]", "Tensor[3, 8, 8]"]);
}

#[test]
fn if_statements_carry_assigned_variables_from_both_branches() {
    let c = check(
        r#"
fn pick(flag: Bool) -> Float {
    var v = 1.0
    if flag { v = 2.0 } else { v = 3.0 }
    v
}
report pick(true)
"#,
    );
    let g = &c.graph;
    let iff = ops(g, |o| matches!(o, Op::If { .. }))
        .next()
        .expect("an if node");
    let Op::If { then, otherwise } = iff.op else {
        unreachable!()
    };
    // Output 0 is the if's value, output 1 the carried `v`.
    assert_eq!(g.region(then).outputs.len(), 2);
    assert_eq!(g.region(otherwise).outputs.len(), 2);
    assert_eq!(iff.ty.to_string(), "((), Float)");
}

#[test]
fn every_node_keeps_its_source_span() {
    let c = check(SOLVER);
    let text = SOLVER;
    let (root, _) = c
        .sources
        .files()
        .find(|(_, f)| f.name == "t.mapga")
        .expect("the root file");
    for n in c.graph.nodes.iter().filter(|n| n.span.file == root) {
        assert!(n.span.end as usize <= text.len());
    }
    // Nodes from library defaults point into the library's file.
    assert!(c.graph.nodes.iter().any(|n| n.span.file != root));
    let opt = ops(&c.graph, |o| matches!(o, Op::Optimize { .. }))
        .next()
        .expect("an optimize node");
    assert!(text[opt.span.range()].starts_with("descend z with adam"));
}

#[test]
fn the_graph_round_trips_through_ron() {
    let c = check(SOLVER);
    let text = c.graph.to_ron().expect("serialises");
    let back: Graph = ron::from_str(&text).expect("deserialises");
    assert_eq!(back, c.graph);
}

#[test]
fn params_take_command_line_overrides() {
    let mut opts = CheckOptions::default();
    opts.overrides.insert("size".into(), "14".into());
    let c = check_source(
        "t.mapga",
        "param size = 28\nlet m = box_mask(size, size, top: 1, left: 1, height: 2, width: 2)\nreport sum(m)\n",
        Path::new("."),
        &opts,
    );
    assert!(!c.diags.has_errors());
    let mask = ops(
        &c.graph,
        |o| matches!(o, Op::Builtin { name, .. } if name == "box_mask"),
    )
    .next()
    .expect("mask");
    assert_eq!(mask.ty.to_string(), "Tensor[1, 14, 14]");
}

#[test]
fn dot_output_names_every_node() {
    let c = check(SOLVER);
    let dot = mapga::graph::to_dot(&c.graph);
    assert!(dot.starts_with("digraph mapga {"));
    for i in 0..c.graph.nodes.len() {
        assert!(dot.contains(&format!("n{i} [")), "node {i} missing");
    }
}
