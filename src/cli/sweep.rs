//! `mapga run FILE --sweep NAME=V1,V2,... [--sweep ...]`: the pipeline at every point of the
//! cartesian product of the swept params, one output folder per point, and a summary table.
//!
//! A sweep is an evaluation whose grid comes from the command line: the points are checked
//! before anything runs, run one after the other in this process into `OUT/cells/<point>/`
//! (a point finished by an earlier run of the same program is reused), sharing one node cache:
//! what the swept params do not change (models, data, the measurement) is computed once. Then
//! `results.csv`,
//! `summary.md` (printed at the end) and `figure.png` are written into `OUT`, by the
//! machinery of `mapga eval` (`crate::eval`).

use std::path::PathBuf;
use std::sync::Arc;

use super::eval::{run_cells, CellBar};
use super::{print_diags, MessageFormat, RunArgs};
use crate::eval::{self, EvalOptions, SweepAxis};
use crate::runtime::{Env, NodeCache};

/// Parses `--sweep NAME=V1,V2,...`: the values are split at commas outside double quotes and
/// trimmed; each is a `--set` value.
pub(super) fn parse_sweep(text: &str) -> Result<SweepAxis, String> {
    let (name, values) =
        super::param_assignment("--sweep", text, "NAME=V1,V2,...", "sigma_y=0.05,0.1")?;
    let mut parts = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in values.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(format!("`--sweep {text}`: a `\"` is not closed"));
    }
    parts.push(current);
    let values: Vec<String> = parts.iter().map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!(
            "`--sweep {text}`: an empty value (list values as `{name}=1,2,3`)"
        ));
    }
    Ok(SweepAxis {
        name: name.to_string(),
        values,
    })
}

/// Runs the sweep of `args` (which has at least one `--sweep`); returns the exit code: 0 when
/// every point finished, 1 for errors in the program or a failed point, 2 for usage and I/O
/// errors.
pub fn run(args: &RunArgs) -> u8 {
    let sets = match super::overrides_for(&args.file, &args.set) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let axes: Vec<SweepAxis> = match args.sweep.iter().map(|s| parse_sweep(s)).collect() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let device = match super::run::device(args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let stem = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join("sweep").join(&stem));
    // Swept values that name files may be read, as `--set` values may.
    let mut named = sets.clone();
    for (i, value) in axes.iter().flat_map(|a| &a.values).enumerate() {
        named.insert(format!("sweep value {i}"), value.clone());
    }
    let check = crate::check::CheckOptions {
        permissions: args.access.permissions(&args.file, &out_dir, &named),
        overrides: sets,
    };
    let suite = match eval::check_sweep(&args.file, &check, &axes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                eval::SweepError::UnknownParam(_) => 1,
                eval::SweepError::Usage(_) => 2,
            };
        }
    };
    print_diags(&suite.diags.0, &suite.sources, MessageFormat::Human);
    if suite.has_errors() {
        let n = suite.diags.error_count();
        eprintln!("{n} error{}: not running", if n == 1 { "" } else { "s" });
        return 1;
    }
    let bar = Arc::new(CellBar::default());
    if !args.quiet {
        // The bar is the observer that stops the cells at SIGINT/SIGTERM.
        super::signals::install();
    }
    let opts = EvalOptions {
        out_dir: out_dir.clone(),
        shard: None,
        env: Env {
            device,
            dtype: args.dtype.dtype(),
            seed: args.seed,
        },
        figure_items: 3,
        cache: Some(Arc::new(NodeCache::new())),
        observer: (!args.quiet).then(|| bar.clone() as Arc<dyn crate::runtime::Observer>),
        title: Some(format!(
            "Sweep of `{}` over {}",
            args.file
                .file_name()
                .map_or(stem.clone(), |n| n.to_string_lossy().into_owned()),
            axes.iter()
                .map(|a| format!("{} in [{}]", a.name, a.values.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    let points = suite.cells.len();
    println!(
        "{points} point{} checked",
        if points == 1 { "" } else { "s" }
    );
    let code = run_cells(&args.file, &suite, &opts, &bar);
    if code != 2 {
        match std::fs::read_to_string(out_dir.join("summary.md")) {
            Ok(table) => print!("\n{table}"),
            Err(e) => {
                eprintln!(
                    "error: cannot read `{}`: {e}",
                    out_dir.join("summary.md").display()
                );
                return 2;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::parse_sweep;

    #[test]
    fn sweeps_split_at_commas_outside_quotes() {
        let a = parse_sweep("step=0.1, 0.2,1").unwrap();
        assert_eq!(a.name, "step");
        assert_eq!(a.values, ["0.1", "0.2", "1"]);
        let a = parse_sweep(r#"task="a,b",box25"#).unwrap();
        assert_eq!(a.values, [r#""a,b""#, "box25"]);
    }

    #[test]
    fn malformed_sweeps_are_errors() {
        for bad in [
            "step",
            "=1,2",
            "st ep=1",
            "step=1,,2",
            "step=",
            r#"task="a,b"#,
        ] {
            assert!(parse_sweep(bad).is_err(), "{bad}");
        }
    }
}
