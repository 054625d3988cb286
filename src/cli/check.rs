//! `mapga check`: each file with its defaults and, for a suite with `grid` items, as every
//! cell (a problem found only in cells is reported once, with a note naming a cell).

use super::{parse_sets, print_diags, CheckArgs};

/// Checks each file; returns the exit code.
pub fn run(args: &CheckArgs) -> u8 {
    let overrides = match parse_sets(&args.set) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (mut errors, mut warnings, mut unreadable) = (0usize, 0usize, false);
    for file in &args.files {
        match std::fs::metadata(file) {
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", file.display());
                unreadable = true;
                continue;
            }
            Ok(m) if m.is_dir() => {
                eprintln!(
                    "error: `{}` is a folder; give pipeline files (`.mapga`)",
                    file.display()
                );
                unreadable = true;
                continue;
            }
            Ok(_) => {}
        }
        let opts = crate::check::CheckOptions {
            permissions: args
                .access
                .permissions(file, &super::default_out(file), &overrides),
            overrides: overrides.clone(),
        };
        let checked = crate::eval::check_suite(file, &opts);
        print_diags(&checked.diags.0, &checked.sources, args.message_format);
        errors += checked.diags.error_count();
        warnings += checked.diags.warning_count();
    }
    if errors + warnings > 0 {
        eprintln!(
            "{} error{}, {} warning{}",
            errors,
            if errors == 1 { "" } else { "s" },
            warnings,
            if warnings == 1 { "" } else { "s" }
        );
    }
    if unreadable {
        2
    } else if errors > 0 || (args.deny_warnings && warnings > 0) {
        1
    } else {
        0
    }
}
