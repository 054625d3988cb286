//! From a path to a model card: what a checkpoint is, decided before any weight is used.
//!
//! mapga's own networks carry a RON card beside their weights ([`super::card`]). The field's
//! checkpoints do not: for them [`describe`] reads the tensor names and shapes (any format of
//! [`super::formats`]), identifies the ADM layout and the release ([`presets`]), and writes
//! the card itself: architecture `adm`, the image shape of the release (or of a diffusers
//! `sample_size`), the preconditioning of the family, and what the model is. A card beside
//! such a checkpoint (`cd_imagenet64_lpips.ron` for `cd_imagenet64_lpips.pt`) may still set
//! or override any of it; its `architecture` must then be `adm`.
//!
//! What a model is (consistency model or denoiser) comes from, in order: the card; the
//! release's file name (`cd_*`, `ct_*`: consistency; `edm_*`: denoiser; guided-diffusion ADM
//! files are VP ε-prediction denoisers); the declaration (`consistency(...)` or
//! `denoiser(...)`). A file name that contradicts the declaration is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::adm::{self, AdmConfig};
use super::card::{self, CardError, HyperValue, ModelCard, ModelKind};
use super::formats::{self, presets, Format, FormatError};
use super::network::ModelError;
use super::precond::{self, Preconditioning};

/// OpenAI's time input per unit of ln σ (`1000 · 0.25 · ln σ`).
pub const OPENAI_NOISE_SCALE: f64 = 250.0;

/// Everything known about a checkpoint before its network is built.
#[derive(Debug, Clone)]
pub struct Description {
    /// The card: read from beside the file, or inferred (possibly both, merged).
    pub card: ModelCard,
    /// The card file, when there is one.
    pub card_path: Option<PathBuf>,
    /// The ADM architecture, for `adm` checkpoints (`None` for mapga's own `unet`).
    pub adm: Option<AdmConfig>,
    /// How the network's output becomes a denoiser or consistency function.
    pub precond: Preconditioning,
    /// The known release the tensors match, if any.
    pub preset: Option<&'static presets::Preset>,
    /// The checkpoint's format.
    pub format: Format,
}

/// The kind a release's file name says: `cd_*`/`ct_*` consistency models, `edm_*` denoisers
/// (also inside a diffusers folder name such as `diffusers-cd_imagenet64_lpips`).
pub fn kind_from_file_name(path: &Path) -> Option<ModelKind> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = name.rsplit(['-', '/']).next().unwrap_or(&name);
    if name.starts_with("cd_") || name.starts_with("ct_") {
        Some(ModelKind::Consistency)
    } else if name.starts_with("edm_") {
        Some(ModelKind::Denoiser)
    } else {
        None
    }
}

/// The card beside `weights`, if the file exists.
fn card_beside(weights: &Path) -> Result<Option<(ModelCard, PathBuf)>, ModelError> {
    let path = card::card_path_for(weights);
    match card::load_card(&path) {
        Ok(c) => Ok(Some((c, path))),
        Err(CardError::Missing(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Tensor names and shapes, and what a diffusers folder's `config.json` says.
type Shapes = (
    BTreeMap<String, Vec<usize>>,
    Option<formats::diffusers::UNetConfig>,
);

/// The tensor names and shapes of a checkpoint, from its header (safetensors) or pickle
/// (PyTorch); a diffusers folder's weights are read to map their names.
fn shapes_of(path: &Path, format: Format) -> Result<Shapes, ModelError> {
    if format == Format::Safetensors {
        let header =
            crate::io::headers::safetensors_header(path).map_err(|e| ModelError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let shapes = header
            .into_iter()
            .map(|(k, info)| (k, info.shape.iter().map(|&d| d as usize).collect()))
            .collect();
        return Ok((shapes, None));
    }
    if format == Format::PyTorch {
        // The pickle alone: no storage is read (the weights can be gigabytes).
        let shapes = formats::pytorch::read_pytorch_shapes(path).map_err(FormatError::from)?;
        return Ok((shapes, None));
    }
    let weights = formats::read(path)?;
    Ok((weights.shapes(), weights.diffusers))
}

/// Describes the checkpoint at `path` for a model declared as `declared` (if known).
pub fn describe(path: &Path, declared: Option<ModelKind>) -> Result<Description, ModelError> {
    let format = formats::format_of(path)?;
    let beside = card_beside(path)?;
    if let Some((card, card_path)) = &beside {
        card::verify_weights(card, card_path, path)?;
    }
    if let Some((card, card_path)) = &beside {
        if card.architecture == "unet" || card.kind == ModelKind::Classifier {
            // mapga's own card: everything is in it (checked by `network::architecture_of`).
            if let Some(d) =
                declared.filter(|&d| d != card.kind && card.kind != ModelKind::Classifier)
            {
                return Err(ModelError::Kind {
                    card: card_path.clone(),
                    found: format!("{} (says its card)", kind_name(card.kind)),
                    expected: kind_name(d).into(),
                });
            }
            let precond = Preconditioning::Karras {
                sigma_data: card.sigma_data,
                sigma_min: card.sigma_min,
                noise_scale: 0.25,
            };
            return Ok(Description {
                card: card.clone(),
                card_path: Some(card_path.clone()),
                adm: None,
                precond,
                preset: None,
                format,
            });
        }
        if card.architecture != "adm" {
            return Err(ModelError::Architecture {
                card: card_path.clone(),
                architecture: card.architecture.clone(),
            });
        }
    }
    let (shapes, diffusers) = shapes_of(path, format)?;
    let adm_like = shapes
        .keys()
        .any(|k| k.starts_with("input_blocks.") || k.starts_with("time_embed."));
    if beside.is_none() && !adm_like {
        // Not the ADM family (mapga's own U-Net, or something else): only a card can say.
        return Err(CardError::Missing(card::card_path_for(path)).into());
    }
    let sample_size = diffusers.as_ref().and_then(|d| d.sample_size);
    let card_hp = beside
        .as_ref()
        .map(|(c, _)| c.hyperparameters.clone())
        .unwrap_or_default();
    let heads = heads_override(&card_hp).or_else(|| {
        diffusers
            .as_ref()
            .and_then(|d| d.attention_head_dim)
            .map(adm::Heads::Channels)
    });
    let config_error = |error| ModelError::Config {
        card: beside
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| path.to_path_buf()),
        error,
    };
    for key in card_hp.keys() {
        if !adm::HYPERPARAMETERS.contains(&key.as_str())
            && !precond::HYPERPARAMETERS.contains(&key.as_str())
        {
            return Err(config_error(super::unet::ConfigError {
                key: key.clone(),
                message: format!(
                    "unknown for architecture `adm` (expected one of: {}, {})",
                    adm::HYPERPARAMETERS.join(", "),
                    precond::HYPERPARAMETERS.join(", ")
                ),
            }));
        }
    }
    let identified = presets::identify(&shapes, heads).map_err(|error| ModelError::Layout {
        path: path.to_path_buf(),
        error,
    })?;
    let mut config = identified.config.clone();
    config.apply(&card_hp).map_err(config_error)?;
    let family = identified.family;
    let by_name = kind_from_file_name(path);
    let kind = match (&beside, family) {
        (Some((c, _)), _) => c.kind,
        (None, presets::Family::GuidedDiffusionVp) => ModelKind::Denoiser,
        (None, presets::Family::OpenAiKarras) => match (by_name, declared) {
            (Some(k), _) => k,
            (None, Some(k)) => k,
            (None, None) => ModelKind::Denoiser,
        },
    };
    if let Some(d) = declared {
        if d != kind {
            return Err(ModelError::Kind {
                card: path.to_path_buf(),
                found: format!(
                    "{} ({})",
                    kind_name(kind),
                    if beside.is_some() {
                        "says its card"
                    } else if family == presets::Family::GuidedDiffusionVp {
                        "an ε-prediction ADM model"
                    } else {
                        "says its file name"
                    }
                ),
                expected: kind_name(d).into(),
            });
        }
    }
    let (sigma_data, sigma_min) = beside
        .as_ref()
        .map_or((0.5, 0.002), |(c, _)| (c.sigma_data, c.sigma_min));
    let default = match family {
        presets::Family::OpenAiKarras => Preconditioning::Karras {
            sigma_data,
            sigma_min,
            noise_scale: OPENAI_NOISE_SCALE,
        },
        presets::Family::GuidedDiffusionVp => {
            Preconditioning::VpEpsilon(precond::VpSchedule::linear(1e-4, 0.02, 1000))
        }
    };
    let precond = Preconditioning::from_hyperparameters(default, sigma_data, sigma_min, &card_hp)
        .map_err(config_error)?;
    let size = identified.preset.map(|p| p.image_size).or(sample_size);
    let card = match beside {
        Some((mut c, card_path)) => {
            c.hyperparameters = merged(&config, &precond);
            return Ok(Description {
                card: c,
                card_path: Some(card_path),
                adm: Some(config),
                precond,
                preset: identified.preset,
                format,
            });
        }
        None => {
            let size = size.ok_or_else(|| ModelError::NeedsCard {
                path: path.to_path_buf(),
                message: "its image size is not known (it is no known release and the format \
                          does not say): put a card beside it with `image_shape: (3, H, W)`"
                    .into(),
            })?;
            inferred_card(
                path,
                kind,
                &config,
                &precond,
                size,
                identified.preset,
                format,
            )
        }
    };
    Ok(Description {
        card,
        card_path: None,
        adm: Some(config),
        precond,
        preset: identified.preset,
        format,
    })
}

fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Denoiser => "denoiser",
        ModelKind::Consistency => "consistency model",
        ModelKind::Classifier => "classifier",
    }
}

/// The heads a card sets, if any.
fn heads_override(hp: &BTreeMap<String, HyperValue>) -> Option<adm::Heads> {
    let n = |k: &str| hp.get(k).and_then(HyperValue::as_u64).map(|n| n as usize);
    n("num_head_channels")
        .map(adm::Heads::Channels)
        .or_else(|| n("num_heads").map(adm::Heads::Count))
}

/// The card hyperparameters of an ADM checkpoint: architecture and preconditioning.
fn merged(config: &AdmConfig, precond: &Preconditioning) -> BTreeMap<String, HyperValue> {
    let mut hp = config.to_hyperparameters();
    hp.extend(precond.to_hyperparameters());
    hp
}

/// The card mapga writes for a checkpoint that has none.
fn inferred_card(
    path: &Path,
    kind: ModelKind,
    config: &AdmConfig,
    precond: &Preconditioning,
    size: usize,
    preset: Option<&'static presets::Preset>,
    format: Format,
) -> ModelCard {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("checkpoint")
        .to_string();
    let (sigma_min, sigma_max) = match precond {
        Preconditioning::Karras { sigma_min, .. } => (*sigma_min, 80.0),
        Preconditioning::VpEpsilon(s) => {
            let sigmas = s.sigmas();
            (sigmas[0], sigmas[sigmas.len() - 1])
        }
    };
    let sigma_data = match precond {
        Preconditioning::Karras { sigma_data, .. } => *sigma_data,
        Preconditioning::VpEpsilon(_) => 0.5,
    };
    let release = preset.map_or("an ADM layout no preset names".to_string(), |p| {
        format!("the layout of the `{}` release ({})", p.name, p.source)
    });
    ModelCard {
        name,
        kind,
        architecture: "adm".into(),
        image_shape: [config.in_channels as u32, size as u32, size as u32],
        value_range: (-1.0, 1.0),
        sigma_data,
        sigma_min,
        sigma_max,
        hyperparameters: merged(config, precond),
        provenance: Some(format!(
            "inferred by mapga from the tensors of the {} `{}`: {release}",
            format.name(),
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        )),
        weights_sha256: None,
        tensors: None,
    }
}
