//! `mapga inspect PATH`: what mapga infers about a checkpoint, without building its network:
//! the format, the release it matches, the tensor and parameter counts, and the card (read
//! from beside it, completed from the tensors, or inferred), printed as RON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::convert::{self, Failure, KindArg};
use crate::models::adm::AdmUNet;
use crate::models::checkpoint::Description;
use crate::models::formats::{self, presets, Format};

/// Arguments of `mapga inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The checkpoint: a .safetensors file, a PyTorch .pt/.pth/.bin/.ckpt file, or a diffusers
    /// folder (a card with the same name and a .ron extension beside it is used).
    pub path: PathBuf,
    /// What the checkpoint is, when neither its card nor its file name says (as for
    /// `mapga convert`).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
}

/// Prints what mapga infers about the checkpoint; returns the exit code.
pub fn run(args: &InspectArgs) -> u8 {
    match inspect(args) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// The names and shapes of the checkpoint's tensors, read without building the network (the
/// header alone for a safetensors file).
fn file_shapes(path: &Path, format: Format) -> Result<BTreeMap<String, Vec<usize>>, Failure> {
    if format == Format::Safetensors {
        let header = crate::io::headers::safetensors_header(path)
            .map_err(|e| Failure::checkpoint(path, e))?;
        return Ok(header
            .into_iter()
            .map(|(k, info)| (k, info.shape.iter().map(|&d| d as usize).collect()))
            .collect());
    }
    formats::read(path)
        .map(|w| w.shapes())
        .map_err(|e| Failure::checkpoint(path, e))
}

/// The tensor names and shapes of the described checkpoint: for an ADM checkpoint those its
/// configuration needs (`describe` checked the file holds exactly them), else the file's,
/// checked against what the card's architecture needs.
fn shapes_of(
    path: &Path,
    description: &Description,
) -> Result<BTreeMap<String, Vec<usize>>, Failure> {
    if let Some(config) = &description.adm {
        return AdmUNet::tensor_shapes(config).map_err(|e| Failure::checkpoint(path, e));
    }
    let shapes = file_shapes(path, description.format)?;
    if let Some(needed) = convert::needed_shapes(path, description)? {
        if let Some(m) = presets::first_mismatch(&needed, &shapes) {
            return Err(Failure::checkpoint(path, format!("the network {m}")));
        }
    }
    Ok(shapes)
}

fn inspect(args: &InspectArgs) -> Result<String, Failure> {
    let path = &args.path;
    let description = convert::describe(path, args.kind)?;
    let shapes = shapes_of(path, &description)?;
    let card = convert::card_to_write(&description)?;
    let ron = card.to_ron().map_err(|e| Failure::checkpoint(path, e))?;

    let mut out = String::new();
    let _ = writeln!(out, "checkpoint: {}", path.display());
    let _ = writeln!(out, "format: {}", description.format.name());
    match (description.preset, &description.adm) {
        (Some(p), _) => {
            let _ = writeln!(out, "preset: {}", p.name);
            let _ = writeln!(out, "  source: {}", p.source);
            let _ = writeln!(out, "  released files: {}", p.files.join(", "));
        }
        (None, Some(_)) => {
            let _ = writeln!(out, "preset: none (an ADM layout no known release has)");
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "preset: none (mapga's own `{}` architecture)",
                description.card.architecture
            );
        }
    }
    let source = match (&description.card_path, &description.adm) {
        (Some(p), Some(_)) => format!("`{}`, completed from the tensors", p.display()),
        (Some(p), None) => format!("`{}`", p.display()),
        (None, _) => "inferred from the tensors (no card beside the checkpoint)".into(),
    };
    let _ = writeln!(out, "card: {source}");
    let _ = writeln!(out, "kind: {}", convert::kind_name(card.kind));
    let _ = writeln!(out, "tensors: {}", shapes.len());
    let parameters: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
    let _ = writeln!(out, "parameters: {parameters}");
    if let Some(n) = description.adm.as_ref().and_then(|c| c.num_classes) {
        let _ = writeln!(out, "classes: {n}");
    }
    let _ = writeln!(
        out,
        "\n// The card `mapga convert` writes beside the converted file (which also sets `name`\n\
         // to the output's stem, notes the conversion in `provenance` and adds `weights_sha256`):"
    );
    let _ = writeln!(out, "{ron}");
    Ok(out)
}
