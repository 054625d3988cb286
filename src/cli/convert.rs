//! `mapga convert IN OUT`: any checkpoint mapga reads (a safetensors file, a PyTorch archive,
//! a diffusers folder; with or without a card beside it) to a safetensors file under the
//! official tensor names, with the full card beside it (`OUT.ron`), so later loads need no
//! inference and read the fastest format.
//!
//! The tensors are copied as they are (a legacy-order `qkv` stays legacy: the card says
//! `qkv_order`), converted to the chosen float type. The file is streamed to disk through a
//! SHA-256 hasher, so the card's `weights_sha256` is the hash of exactly the bytes written,
//! and then its header is read back and checked against what was meant to be written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use clap::ValueEnum;
use sha2::{Digest, Sha256};

use crate::models::adm::AdmUNet;
use crate::models::card::{self, ModelCard, ModelKind};
use crate::models::checkpoint::{self, Description};
use crate::models::formats::{self, presets};
use crate::models::network::architecture_of;
use crate::models::precond::Preconditioning;
use crate::models::unet::UNet;
use crate::models::ModelError;

/// What a checkpoint is declared to be (`--kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A denoiser D(x, sigma).
    Denoiser,
    /// A consistency model f(x, t).
    Consistency,
}

impl KindArg {
    /// The model kind this choice names.
    pub fn kind(self) -> ModelKind {
        match self {
            KindArg::Denoiser => ModelKind::Denoiser,
            KindArg::Consistency => ModelKind::Consistency,
        }
    }
}

/// The float type the converted tensors are stored in (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum StorageDtype {
    /// 32-bit floats (default): loads in any dtype without rounding.
    #[default]
    F32,
    /// 16-bit IEEE half floats: half the size, rounded.
    F16,
    /// 16-bit bfloat16: half the size, rounded more coarsely but with f32's range.
    Bf16,
}

impl StorageDtype {
    /// The candle dtype this choice names.
    pub fn dtype(self) -> DType {
        match self {
            StorageDtype::F32 => DType::F32,
            StorageDtype::F16 => DType::F16,
            StorageDtype::Bf16 => DType::BF16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StorageDtype::F32 => "f32",
            StorageDtype::F16 => "f16",
            StorageDtype::Bf16 => "bf16",
        }
    }
}

/// Arguments of `mapga convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The checkpoint to convert: a .safetensors file, a PyTorch .pt/.pth/.bin/.ckpt file, or
    /// a diffusers folder (a card with the same name and a .ron extension beside it is used).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The file to write; must end in .safetensors. Its card goes beside it (`OUT.ron`).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// What the checkpoint is, when neither its card nor its file name says (a release's
    /// `cd_*`/`ct_*` files are consistency models, `edm_*` denoisers).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// The float type the tensors are stored in.
    #[arg(long, value_enum, default_value_t)]
    pub dtype: StorageDtype,
    /// Overwrite OUT and its card when they exist.
    #[arg(long)]
    pub force: bool,
}

/// Why a command stopped: the message and the exit code (1: the checkpoint cannot be used;
/// 2: usage and I/O).
#[derive(Debug)]
pub(super) struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub(super) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    /// A checkpoint that cannot be used; the message names `path` when `error` does not.
    pub(super) fn checkpoint(path: &Path, error: impl std::fmt::Display) -> Failure {
        let text = error.to_string();
        let name = path.display().to_string();
        let message = if text.contains(&name) {
            text
        } else {
            format!("`{name}`: {text}")
        };
        Failure { message, code: 1 }
    }
}

/// Converts; returns the exit code.
pub fn run(args: &ConvertArgs) -> u8 {
    match convert(args) {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// The checkpoint at `path` described for `declared` (checking that a path exists first:
/// a missing one is a usage error, exit 2).
pub(super) fn describe(path: &Path, declared: Option<KindArg>) -> Result<Description, Failure> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(Failure::usage(format!(
            "cannot read `{}`: {e}",
            path.display()
        )));
    }
    let declared = declared.map(KindArg::kind);
    let description =
        checkpoint::describe(path, declared).map_err(|e| Failure::checkpoint(path, e))?;
    // `describe` settles the kind of ADM checkpoints; mapga's own cards say theirs.
    if let (Some(d), None) = (declared, &description.adm) {
        if description.card.kind != d {
            let card_path = description
                .card_path
                .clone()
                .unwrap_or_else(|| card::card_path_for(path));
            let error = ModelError::Kind {
                card: card_path,
                found: kind_name(description.card.kind).into(),
                expected: kind_name(d).into(),
            };
            return Err(Failure::checkpoint(path, error));
        }
    }
    Ok(description)
}

pub(super) fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Denoiser => "denoiser",
        ModelKind::Consistency => "consistency model",
        ModelKind::Classifier => "classifier",
    }
}

/// The tensor names and shapes the described network needs, when the card names an
/// architecture with a fixed tensor list (`adm` and `unet`; `None` for a classifier).
pub(super) fn needed_shapes(
    path: &Path,
    description: &Description,
) -> Result<Option<BTreeMap<String, Vec<usize>>>, Failure> {
    let fail = |e: candle_core::Error| Failure::checkpoint(path, e);
    if let Some(config) = &description.adm {
        return AdmUNet::tensor_shapes(config).map(Some).map_err(fail);
    }
    if description.card.kind == ModelKind::Classifier {
        return Ok(None);
    }
    let card_path = description
        .card_path
        .clone()
        .unwrap_or_else(|| card::card_path_for(path));
    let config =
        architecture_of(&description.card, &card_path).map_err(|e| Failure::checkpoint(path, e))?;
    UNet::tensor_shapes(&config).map(Some).map_err(fail)
}

/// The card `mapga convert` writes for a described checkpoint, before its name, provenance
/// note and hash are set: the described card without a tensor list or hash. A card beside
/// the checkpoint keeps the preconditioning settings the described hyperparameters cannot
/// express (a VP schedule's `beta_start` and `beta_end`).
pub(super) fn card_to_write(description: &Description) -> Result<ModelCard, Failure> {
    let mut out = description.card.clone();
    out.tensors = None;
    out.weights_sha256 = None;
    if let (Some(card_path), Some(_), Preconditioning::VpEpsilon(_)) = (
        &description.card_path,
        &description.adm,
        &description.precond,
    ) {
        let beside = card::load_card(card_path).map_err(|e| Failure::checkpoint(card_path, e))?;
        for key in ["beta_start", "beta_end"] {
            if let Some(v) = beside.hyperparameters.get(key) {
                out.hyperparameters
                    .entry(key.to_string())
                    .or_insert_with(|| v.clone());
            }
        }
    }
    Ok(out)
}

/// A short phrase for the release a checkpoint matches.
pub(super) fn preset_phrase(description: &Description) -> String {
    match (description.preset, &description.adm) {
        (Some(p), _) => format!("preset {}", p.name),
        (None, Some(_)) => "no known release".into(),
        (None, None) => format!(
            "mapga's own `{}` architecture",
            description.card.architecture
        ),
    }
}

/// Whether two paths name the same file (OUT need not exist).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = parent.unwrap_or(Path::new(".")).canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The checks on OUT that need no checkpoint: its extension, that it is not IN, and that it
/// (or its card) is not in the way.
fn check_output(args: &ConvertArgs) -> Result<PathBuf, Failure> {
    let out = &args.output;
    let is_safetensors = out
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_safetensors {
        return Err(Failure::usage(format!(
            "`{}`: the output must be a .safetensors file",
            out.display()
        )));
    }
    if same_file(&args.input, out) {
        return Err(Failure::usage(format!(
            "`{}` is the input: write the converted checkpoint to another file",
            out.display()
        )));
    }
    let card_out = card::card_path_for(out);
    for path in [out, &card_out] {
        if path.is_dir() {
            return Err(Failure::usage(format!(
                "`{}` is a folder; cannot write a file there",
                path.display()
            )));
        }
        if path.exists() && !args.force {
            let whose = if same_file(path, &card::card_path_for(&args.input)) {
                format!(" (it is the card of `{}`)", args.input.display())
            } else {
                String::new()
            };
            return Err(Failure::usage(format!(
                "`{}` exists{whose}: pass --force to overwrite `{}` and its card `{}`, or \
                 choose another output name",
                path.display(),
                out.display(),
                card_out.display()
            )));
        }
    }
    Ok(card_out)
}

/// One tensor to write: its name, its tensor and the dtype it is stored in.
struct Planned<'a> {
    name: &'a str,
    tensor: &'a Tensor,
    dtype: DType,
}

impl Planned<'_> {
    fn st_dtype(&self) -> safetensors::Dtype {
        self.dtype.into()
    }

    fn bytes(&self) -> usize {
        self.tensor.elem_count() * self.dtype.size_in_bytes()
    }
}

/// The safetensors header (JSON, padded with spaces to a multiple of 8 bytes) for `plan`, in
/// the order the data follows.
fn header(plan: &[Planned]) -> Result<Vec<u8>, String> {
    let mut map = serde_json::Map::new();
    let mut offset = 0usize;
    for p in plan {
        let end = offset + p.bytes();
        let dtype = serde_json::to_value(p.st_dtype()).map_err(|e| e.to_string())?;
        map.insert(
            p.name.to_string(),
            serde_json::json!({
                "dtype": dtype,
                "shape": p.tensor.dims(),
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&map).map_err(|e| e.to_string())?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok(bytes)
}

/// Writes `plan` to `path` as safetensors, atomically, converting each tensor only as it is
/// written; returns the SHA-256 (hex) and length of the bytes written.
fn write_safetensors(path: &Path, plan: &[Planned]) -> Result<(String, u64), Failure> {
    let header = header(plan)
        .map_err(|e| Failure::usage(format!("cannot write `{}`: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    crate::io::atomic::write_atomically(path, |w| {
        let mut put = |bytes: &[u8]| {
            hasher.update(bytes);
            written += bytes.len() as u64;
            w.write_all(bytes)
        };
        put(&(header.len() as u64).to_le_bytes())?;
        put(&header)?;
        for p in plan {
            let t = p
                .tensor
                .to_dtype(p.dtype)
                .map_err(|e| std::io::Error::other(format!("tensor `{}`: {e}", p.name)))?;
            put(&safetensors::View::data(&t))?;
        }
        Ok(())
    })
    .map_err(|e| Failure::usage(e.to_string()))?;
    let hash = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hash, written))
}

/// Reads back the header of the written file: every planned tensor, with its shape and
/// dtype, and nothing else.
fn verify(path: &Path, plan: &[Planned]) -> Result<(), Failure> {
    let fail = |what: String| {
        Failure::usage(format!(
            "`{}` was written but does not hold what was meant: {what}",
            path.display()
        ))
    };
    let header = crate::io::headers::safetensors_header(path).map_err(|e| fail(e.to_string()))?;
    if header.len() != plan.len() {
        return Err(fail(format!(
            "{} tensors instead of {}",
            header.len(),
            plan.len()
        )));
    }
    for p in plan {
        let Some(info) = header.get(p.name) else {
            return Err(fail(format!("tensor `{}` is missing", p.name)));
        };
        let shape: Vec<u64> = p.tensor.dims().iter().map(|&d| d as u64).collect();
        let dtype = serde_json::to_value(p.st_dtype())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if info.shape != shape || info.dtype != dtype {
            return Err(fail(format!(
                "tensor `{}` is {} {:?} instead of {dtype} {shape:?}",
                p.name, info.dtype, info.shape
            )));
        }
    }
    Ok(())
}

/// The file name of `path` for messages (`cm_cond.pt`, a diffusers folder's name).
pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn convert(args: &ConvertArgs) -> Result<String, Failure> {
    let start = Instant::now();
    let input = &args.input;
    let out = &args.output;
    let card_out = check_output(args)?;
    let description = describe(input, args.kind)?;
    let weights = formats::read(input).map_err(|e| Failure::checkpoint(input, e))?;
    let shapes = weights.shapes();
    if let Some(needed) = needed_shapes(input, &description)? {
        if let Some(m) = presets::first_mismatch(&needed, &shapes) {
            return Err(Failure::checkpoint(input, format!("the network {m}")));
        }
    }
    let target = args.dtype.dtype();
    let mut plan: Vec<Planned> = weights
        .tensors
        .iter()
        .map(|(name, tensor)| Planned {
            name,
            tensor,
            dtype: if tensor.dtype().is_float() {
                target
            } else {
                tensor.dtype()
            },
        })
        .collect();
    // The order the safetensors library writes: by descending alignment, then by name.
    plan.sort_by(|a, b| b.st_dtype().cmp(&a.st_dtype()).then(a.name.cmp(b.name)));
    let mut card = card_to_write(&description)?;
    let (hash, bytes) = write_safetensors(out, &plan)?;
    if let Err(f) = verify(out, &plan) {
        let _ = std::fs::remove_file(out);
        return Err(f);
    }

    card.name = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| card.name.clone());
    let note = format!("converted by mapga convert from {}", file_name(input));
    card.provenance = Some(match card.provenance.take() {
        Some(p) if !p.trim().is_empty() => format!("{p}; {note}"),
        _ => note,
    });
    card.weights_sha256 = Some(hash);
    let text = card
        .to_ron()
        .map_err(|e| Failure::usage(format!("cannot write card `{}`: {e}", card_out.display())))?;
    crate::io::atomic::write_bytes(&card_out, format!("{text}\n").as_bytes())
        .map_err(|e| Failure::usage(e.to_string()))?;

    let parameters: usize = weights.tensors.values().map(Tensor::elem_count).sum();
    Ok(format!(
        "converted `{}` ({}, {}) to `{}`: {} tensors, {parameters} parameters as {}, \
         {bytes} bytes, in {:.2} s",
        input.display(),
        weights.format.name(),
        preset_phrase(&description),
        out.display(),
        plan.len(),
        args.dtype.name(),
        start.elapsed().as_secs_f64()
    ))
}
