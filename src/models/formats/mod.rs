//! Checkpoint formats: each file reads one on-disk format into named tensors.
//!
//! [`read`] takes a path as a user gives it (a `.safetensors` file, a PyTorch `.pt`/`.pth`/
//! `.bin` archive, or a diffusers folder) and returns the tensors under the names of the
//! network family's own `state_dict` (a diffusers export's names are mapped back, see
//! [`diffusers`]) on the CPU, in their stored dtype. [`presets`] recognises the known
//! releases from those names and shapes. Nothing outside this folder knows file formats.

pub mod diffusers;
pub mod presets;
pub mod pytorch;
pub mod safetensors;
mod torch_zip;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

/// The on-disk formats mapga reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `.safetensors` file.
    Safetensors,
    /// A `torch.save` zip archive (`.pt`, `.pth`, `.bin`, `.ckpt`).
    PyTorch,
    /// A diffusers folder (`unet/config.json` + `unet/diffusion_pytorch_model.safetensors`).
    Diffusers,
}

impl Format {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "PyTorch checkpoint",
            Format::Diffusers => "diffusers folder",
        }
    }
}

/// A checkpoint's tensors, under the family's own names, and what the format said besides.
#[derive(Debug, Clone)]
pub struct Weights {
    /// The tensors by name, on the CPU, in their stored dtype.
    pub tensors: BTreeMap<String, Tensor>,
    /// The format they came from.
    pub format: Format,
    /// What a diffusers folder's `config.json` says about the architecture.
    pub diffusers: Option<diffusers::UNetConfig>,
    /// The key of a nested PyTorch checkpoint that held the state dict (`model`, `ema`, ...).
    pub nested_key: Option<String>,
}

impl Weights {
    /// The tensors' names and shapes.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect()
    }
}

/// A checkpoint that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Nothing at the path.
    #[error("`{}` does not exist", .0.display())]
    Missing(PathBuf),
    /// A file whose format mapga cannot tell.
    #[error(
        "`{}` is not a checkpoint mapga reads: expected a .safetensors file, a PyTorch \
         .pt/.pth/.bin/.ckpt file, or a diffusers folder (with unet/config.json)",
        .0.display()
    )]
    Unknown(PathBuf),
    /// A PyTorch archive that cannot be read.
    #[error(transparent)]
    PyTorch(#[from] pytorch::PytorchError),
    /// A safetensors file that cannot be read.
    #[error("cannot read safetensors `{}`: {message}", .path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A diffusers folder that cannot be used.
    #[error("diffusers folder `{}`: {message}", .path.display())]
    Diffusers {
        /// The folder (or its `unet` subfolder).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Which format the path holds: a folder is a diffusers export, a file is told by its first
/// bytes (a zip archive is PyTorch's) and then by its extension.
pub fn format_of(path: &Path) -> Result<Format, FormatError> {
    let meta = std::fs::metadata(path).map_err(|_| FormatError::Missing(path.to_path_buf()))?;
    if meta.is_dir() {
        return Ok(Format::Diffusers);
    }
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .unwrap_or(0);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if n == 4 && &magic == b"PK\x03\x04" {
        return Ok(Format::PyTorch);
    }
    match ext.as_str() {
        "safetensors" => Ok(Format::Safetensors),
        // Legacy (non-zip) PyTorch files get their own message from the PyTorch reader.
        "pt" | "pth" | "bin" | "ckpt" => Ok(Format::PyTorch),
        "json" if path.file_name().is_some_and(|n| n == "config.json") => Ok(Format::Diffusers),
        _ => Err(FormatError::Unknown(path.to_path_buf())),
    }
}

/// Reads every tensor of the checkpoint at `path`.
pub fn read(path: &Path) -> Result<Weights, FormatError> {
    match format_of(path)? {
        Format::Safetensors => Ok(Weights {
            tensors: safetensors::read(path)?,
            format: Format::Safetensors,
            diffusers: None,
            nested_key: None,
        }),
        Format::PyTorch => {
            let checkpoint = pytorch::read_pytorch(path)?;
            Ok(Weights {
                tensors: checkpoint.tensors,
                format: Format::PyTorch,
                diffusers: None,
                nested_key: checkpoint.key,
            })
        }
        Format::Diffusers => diffusers::read(path),
    }
}
