//! `mapga graph`.

use super::{print_diags, GraphArgs, GraphFormat, MessageFormat};
use crate::check::{check_file, CheckOptions};

/// Checks the file and prints its graph; returns the exit code.
pub fn run(args: &GraphArgs) -> u8 {
    let overrides = match super::overrides_for(&args.file, &args.set) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let permissions =
        args.access
            .permissions(&args.file, &super::default_out(&args.file), &overrides);
    let checked = check_file(
        &args.file,
        &CheckOptions {
            overrides,
            permissions,
        },
    );
    print_diags(&checked.diags.0, &checked.sources, MessageFormat::Human);
    if checked.diags.has_errors() {
        eprintln!("error: the pipeline has errors; no graph");
        return 1;
    }
    let text = match args.format {
        GraphFormat::Dot => crate::graph::to_dot(&checked.graph),
        GraphFormat::Ron => match checked.graph.to_ron() {
            Ok(t) => t + "\n",
            Err(e) => {
                eprintln!("error: cannot serialise the graph: {e}");
                return 2;
            }
        },
    };
    match &args.output {
        Some(path) => {
            if let Err(e) = crate::io::atomic::write_bytes(path, text.as_bytes()) {
                eprintln!("error: {e}");
                return 2;
            }
        }
        None => print!("{text}"),
    }
    0
}
