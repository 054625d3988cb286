//! `mapga fmt`.

use super::{print_diags, FmtArgs, MessageFormat};
use crate::source::{Origin, SourceMap};

/// Formats each file (or checks that it is formatted); returns the exit code.
pub fn run(args: &FmtArgs) -> u8 {
    let mut code = 0u8;
    for path in &args.files {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", path.display());
                code = 2;
                continue;
            }
        };
        let mut sources = SourceMap::new();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let file = sources.add(
            path.display().to_string(),
            Origin::Path(path.clone()),
            text.clone(),
        );
        if let Err(d) = crate::syntax::decode(file, &bytes) {
            print_diags(&[d], &sources, MessageFormat::Human);
            code = code.max(1);
            continue;
        }
        let formatted = match crate::syntax::format::format_source(file, &text) {
            Ok(f) => f,
            Err(diags) => {
                print_diags(&diags.0, &sources, MessageFormat::Human);
                eprintln!(
                    "error: `{}` has syntax errors; not formatted",
                    path.display()
                );
                code = code.max(1);
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.check {
            println!("{}", path.display());
            code = code.max(1);
        } else if let Err(e) = crate::io::atomic::write_bytes(path, formatted.as_bytes()) {
            eprintln!("error: {e}");
            code = 2;
        }
    }
    code
}
