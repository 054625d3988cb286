//! A trained network with its model card and preconditioning (ALGORITHMS.md sections 3 and
//! 4): mapga's own U-Net ([`super::unet`]) or the ADM family of the field's checkpoints
//! ([`super::adm`]).
//!
//! `Network::load("models/mnist/denoiser.safetensors", dtype, device)` reads the card
//! `models/mnist/denoiser.ron` beside it, checks that the file holds exactly the tensors the
//! card's architecture needs, each with the right shape, and builds the network.
//! `Network::load_as("cd_imagenet64_lpips.pt", Some(ModelKind::Consistency), ..)` loads a
//! checkpoint of any supported format with or without a card ([`super::checkpoint`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::adm::AdmUNet;
use super::card::{self, CardError, ModelCard, ModelKind};
use super::checkpoint::{self, Description};
use super::formats::{self, presets::LayoutError, FormatError};
use super::precond::{Coefficients, Preconditioning};
use super::unet::{ConfigError, UNet, UNetConfig};
use crate::io::headers::TensorInfo;

/// Why a network cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The card is missing, unreadable, invalid, or disagrees with its own tensor list.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The card names an architecture mapga does not have.
    #[error("model card `{}`: unknown architecture `{architecture}` (expected `unet` or `adm`)", .card.display())]
    Architecture {
        /// The card.
        card: PathBuf,
        /// What it says.
        architecture: String,
    },
    /// The card describes another kind of model than the one asked for.
    #[error("model card `{}`: this is a {found}, not a {expected}", .card.display())]
    Kind {
        /// The card.
        card: PathBuf,
        /// What the card describes (kind and architecture).
        found: String,
        /// What the caller needs.
        expected: String,
    },
    /// The network was trained on another pixel range than the program's [-1, 1].
    #[error(
        "model card `{}`: value_range ({}, {}) is not supported yet; networks must be \
         trained on images in [-1, 1]",
        .card.display(), .range.0, .range.1
    )]
    ValueRange {
        /// The card.
        card: PathBuf,
        /// What it says.
        range: (f64, f64),
    },
    /// The card's hyperparameters do not make a network.
    #[error("model card `{}`: {error}", .card.display())]
    Config {
        /// The card.
        card: PathBuf,
        /// What is wrong.
        error: ConfigError,
    },
    /// The weights file cannot be read.
    #[error("cannot read weights `{}`: {message}", .path.display())]
    Read {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A weights file or card cannot be written.
    #[error("cannot write `{}`: {message}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The network needs a tensor the file does not have.
    #[error("weights `{}` lack tensor `{tensor}` (expected shape {expected:?})", .path.display())]
    TensorMissing {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the network needs.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the network needs.
    #[error(
        "tensor `{tensor}` in `{}` has shape {found:?} but the network needs {expected:?}",
        .path.display()
    )]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor of the weights holds NaN or infinite values: the file is damaged, or the
    /// training that wrote it diverged.
    #[error(
        "tensor `{tensor}` in `{}` holds NaN or infinite values: the weights are damaged, or \
         the training that wrote them diverged",
        .path.display()
    )]
    NonFiniteWeights {
        /// The weights file.
        path: PathBuf,
        /// The first such tensor, in name order.
        tensor: String,
    },
    /// The file has a tensor the network does not use (usually a naming mistake).
    #[error(
        "tensor `{tensor}` in `{}` is not part of the network (see the tensor names in \
         the U-Net documentation)",
        .path.display()
    )]
    TensorUnused {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },
    /// The input is not an image (or batch) of the model's shape.
    #[error("the network takes images of shape {expected:?} (or a batch of them), not {found:?}")]
    Input {
        /// The image shape of the model.
        expected: Vec<usize>,
        /// The input's shape.
        found: Vec<usize>,
    },
    /// A noise level outside what the preconditioning allows.
    #[error("noise level {0} must be a positive finite number")]
    Sigma(f64),
    /// The checkpoint file cannot be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The checkpoint's tensors are not a layout mapga can build.
    #[error("checkpoint `{}`: {error}", .path.display())]
    Layout {
        /// The checkpoint.
        path: PathBuf,
        /// What does not fit.
        error: LayoutError,
    },
    /// The checkpoint needs a card to say what it cannot.
    #[error("checkpoint `{}`: {message}", .path.display())]
    NeedsCard {
        /// The checkpoint.
        path: PathBuf,
        /// What is missing and how to give it.
        message: String,
    },
    /// A class-conditional model called without a class label, or labels that do not fit.
    #[error("{0}")]
    Labels(String),
    /// A denoiser-only family (VP ε-prediction) asked for a consistency function.
    #[error(
        "model `{0}` predicts noise (VP ε-prediction): it is a denoiser, not a consistency model"
    )]
    NotConsistency(String),
    /// The tensor library failed.
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
}

/// The raw network under the preconditioning (one per network: the size difference of the
/// variants does not matter).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Backbone {
    /// mapga's own EDM U-Net.
    Edm(UNet),
    /// The ADM / consistency-model U-Net.
    Adm(AdmUNet),
}

/// A trained network with its card: the denoiser D(x, sigma) and consistency function f(x, t).
#[derive(Debug, Clone)]
pub struct Network {
    card: ModelCard,
    path: PathBuf,
    shape: Vec<usize>,
    backbone: Backbone,
    precond: Preconditioning,
    /// Class labels for a class-conditional network: one for every image, or one per image.
    labels: Option<Tensor>,
}

/// The U-Net configuration a card describes, with the checks that need no weights: the
/// architecture is one mapga has, the value range is [-1, 1], and the hyperparameters make a
/// valid network. The checker calls this too, so a bad card is reported before running.
pub fn architecture_of(card: &ModelCard, card_path: &Path) -> Result<UNetConfig, ModelError> {
    if card.kind == card::ModelKind::Classifier {
        return Err(ModelError::Kind {
            card: card_path.to_path_buf(),
            found: format!("classifier (architecture `{}`)", card.architecture),
            expected: "denoiser or consistency model".into(),
        });
    }
    if card.architecture != "unet" {
        return Err(ModelError::Architecture {
            card: card_path.to_path_buf(),
            architecture: card.architecture.clone(),
        });
    }
    if card.value_range != (-1.0, 1.0) {
        return Err(ModelError::ValueRange {
            card: card_path.to_path_buf(),
            range: card.value_range,
        });
    }
    UNetConfig::from_hyperparameters(card.image_shape[0] as usize, &card.hyperparameters).map_err(
        |error| ModelError::Config {
            card: card_path.to_path_buf(),
            error,
        },
    )
}

impl Network {
    /// Loads the weights at `weights` with the card beside them (`.ron`), in `dtype` on
    /// `device`. Every tensor the architecture needs must be in the file with its shape, and
    /// the file must hold no other tensor.
    pub fn load(weights: &Path, dtype: DType, device: &Device) -> Result<Network, ModelError> {
        Network::load_as(weights, None, dtype, device)
    }

    /// Loads a checkpoint of any supported format (safetensors, PyTorch, diffusers folder)
    /// declared as `declared` (when known), with its card or the card inferred from its
    /// tensors ([`checkpoint::describe`]), in `dtype` on `device`.
    pub fn load_as(
        weights: &Path,
        declared: Option<ModelKind>,
        dtype: DType,
        device: &Device,
    ) -> Result<Network, ModelError> {
        let description = checkpoint::describe(weights, declared)?;
        match description.adm.clone() {
            None => Network::load_unet(weights, description, dtype, device),
            Some(config) => Network::load_adm(weights, description, config, dtype, device),
        }
    }

    /// mapga's own U-Net from a safetensors file and its card.
    fn load_unet(
        weights: &Path,
        description: Description,
        dtype: DType,
        device: &Device,
    ) -> Result<Network, ModelError> {
        let card_path = description
            .card_path
            .unwrap_or_else(|| card::card_path_for(weights));
        let card = description.card;
        let config = architecture_of(&card, &card_path)?;
        let shape: Vec<usize> = card.image_shape.iter().map(|&d| d as usize).collect();
        let read_err = |e: candle_core::Error| ModelError::Read {
            path: weights.to_path_buf(),
            message: e.to_string(),
        };
        let tensors = candle_core::safetensors::load(weights, &Device::Cpu).map_err(read_err)?;
        check_weights(weights, &card, &UNet::tensor_shapes(&config)?, &tensors)?;
        let vb = var_builder(weights, tensors, dtype, device)?;
        let unet = UNet::new(&config, vb)?;
        Ok(Network {
            card,
            path: weights.to_path_buf(),
            shape,
            backbone: Backbone::Edm(unet),
            precond: description.precond,
            labels: None,
        })
    }

    /// An ADM-family network from any format.
    fn load_adm(
        weights: &Path,
        description: Description,
        config: super::adm::AdmConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Network, ModelError> {
        let card = description.card;
        let tensors: HashMap<String, Tensor> =
            formats::read(weights)?.tensors.into_iter().collect();
        check_weights(weights, &card, &AdmUNet::tensor_shapes(&config)?, &tensors)?;
        let vb = var_builder(weights, tensors, dtype, device)?;
        let adm = AdmUNet::new(&config, vb)?;
        Ok(Network {
            shape: card.image_shape.iter().map(|&d| d as usize).collect(),
            card,
            path: weights.to_path_buf(),
            backbone: Backbone::Adm(adm),
            precond: description.precond,
            labels: None,
        })
    }

    /// The same network with class labels: one for every image of a batch, or one per image
    /// (`[B]`). Class-conditional networks need them; others refuse them.
    pub fn with_labels(&self, labels: &[i64]) -> Result<Network, ModelError> {
        let classes = self.num_classes().ok_or_else(|| {
            ModelError::Labels(format!(
                "model `{}` is not class-conditional: it takes no class label",
                self.card.name
            ))
        })?;
        if labels.is_empty() {
            return Err(ModelError::Labels("no class label given".into()));
        }
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
            return Err(ModelError::Labels(format!(
                "class {bad} is outside the {classes} classes (0 to {}) of model `{}`",
                classes - 1,
                self.card.name
            )));
        }
        let mut net = self.clone();
        net.labels = Some(Tensor::from_vec(
            labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            labels.len(),
            &Device::Cpu,
        )?);
        Ok(net)
    }

    /// The number of classes of a class-conditional network.
    pub fn num_classes(&self) -> Option<usize> {
        match &self.backbone {
            Backbone::Adm(a) => a.config().num_classes,
            Backbone::Edm(_) => None,
        }
    }

    /// The ADM / consistency-model U-Net, when the network is one.
    pub fn adm(&self) -> Option<&AdmUNet> {
        match &self.backbone {
            Backbone::Adm(a) => Some(a),
            Backbone::Edm(_) => None,
        }
    }

    /// The preconditioning.
    pub fn preconditioning(&self) -> &Preconditioning {
        &self.precond
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The weights file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image shape `[C, H, W]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether the card calls it a denoiser or a consistency model.
    pub fn kind(&self) -> ModelKind {
        self.card.kind
    }

    /// The card's sigma_data.
    pub fn sigma_data(&self) -> f64 {
        self.card.sigma_data
    }

    /// The card's sigma_min.
    pub fn sigma_min(&self) -> f64 {
        self.card.sigma_min
    }

    /// The card's sigma_max.
    pub fn sigma_max(&self) -> f64 {
        self.card.sigma_max
    }

    /// mapga's own U-Net, when the network is one.
    pub fn unet(&self) -> Option<&UNet> {
        match &self.backbone {
            Backbone::Edm(u) => Some(u),
            Backbone::Adm(_) => None,
        }
    }

    /// Checks that `x` is `[C, H, W]` or `[B, C, H, W]` of the model's image shape.
    pub fn check_input(&self, x: &Tensor) -> Result<(), ModelError> {
        let dims = x.dims();
        let image = if dims.len() == self.shape.len() + 1 {
            &dims[1..]
        } else {
            dims
        };
        if image == self.shape.as_slice() {
            Ok(())
        } else {
            Err(ModelError::Input {
                expected: self.shape.clone(),
                found: dims.to_vec(),
            })
        }
    }

    /// `c_skip x + c_out F(c_in x, c_noise)` for an image or a batch.
    fn precondition(&self, x: &Tensor, sigma: f64, c: Coefficients) -> Result<Tensor, ModelError> {
        self.check_input(x)?;
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(ModelError::Sigma(sigma));
        }
        let single = x.rank() == self.shape.len();
        let batch = if single { x.unsqueeze(0)? } else { x.clone() };
        let f = self.raw(&(&batch * c.c_in)?, c.c_noise)?;
        let out = ((&batch * c.c_skip)? + (f * c.c_out)?)?;
        Ok(if single { out.squeeze(0)? } else { out })
    }

    /// The raw network on a batch, its first `C` output channels (a learned variance is
    /// dropped), with the class labels broadcast to the batch.
    fn raw(&self, x: &Tensor, c_noise: f64) -> Result<Tensor, ModelError> {
        match &self.backbone {
            Backbone::Edm(unet) => Ok(unet.forward(x, c_noise)?),
            Backbone::Adm(adm) => {
                let b = x.dim(0)?;
                let labels = match (&self.labels, adm.config().num_classes) {
                    (None, Some(_)) => {
                        return Err(ModelError::Labels(format!(
                            "model `{}` is class-conditional: give it a class label",
                            self.card.name
                        )))
                    }
                    (None, None) => None,
                    (Some(l), _) if l.dim(0)? == b => Some(l.clone()),
                    (Some(l), _) if l.dim(0)? == 1 => Some(l.broadcast_as(b)?.contiguous()?),
                    (Some(l), _) => {
                        return Err(ModelError::Labels(format!(
                            "{} class labels for a batch of {b} images",
                            l.dim(0)?
                        )))
                    }
                };
                let out = adm.forward(x, &[c_noise], labels.as_ref())?;
                let c = x.dim(1)?;
                Ok(if out.dim(1)? == c {
                    out
                } else {
                    out.narrow(1, 0, c)?
                })
            }
        }
    }

    /// The denoiser D(x, sigma) of the network's preconditioning: EDM's scalings (for mapga's
    /// own networks c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in =
    /// 1/sqrt(s^2+sd^2), c_noise = ln(s)/4), or VP ε-prediction's. `x` is `[C, H, W]` or
    /// `[B, C, H, W]`; differentiable in `x`.
    pub fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor, ModelError> {
        self.precondition(x, sigma, self.precond.denoiser(sigma))
    }

    /// The consistency function f(x, t) = c_skip(t) x + c_out(t) F(c_in x, c_noise) with
    /// c_skip = sd^2/((t-s_min)^2+sd^2), c_out = sd (t-s_min)/sqrt(sd^2+t^2), so that
    /// f(x, s_min) = x exactly. `x` is `[C, H, W]` or `[B, C, H, W]`; differentiable in `x`.
    pub fn consistency(&self, x: &Tensor, t: f64) -> Result<Tensor, ModelError> {
        let c = self
            .precond
            .consistency(t)
            .ok_or_else(|| ModelError::NotConsistency(self.card.name.clone()))?;
        if c.c_out == 0.0 {
            // At t = s_min the network term vanishes: return x itself, exactly.
            self.check_input(x)?;
            return Ok((x * c.c_skip)?);
        }
        self.precondition(x, t, c)
    }
}

/// The file's tensors against the card's list ([`card::check_card_against_weights`]) and
/// against the network's needs ([`check_tensors`]).
fn check_weights(
    path: &Path,
    card: &ModelCard,
    needed: &BTreeMap<String, Vec<usize>>,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    let header: BTreeMap<String, TensorInfo> = tensors
        .iter()
        .map(|(name, t)| {
            let info = TensorInfo {
                dtype: format!("{:?}", t.dtype()),
                shape: t.dims().iter().map(|&d| d as u64).collect(),
            };
            (name.clone(), info)
        })
        .collect();
    card::check_card_against_weights(card, &header)?;
    check_tensors(path, needed, tensors)
}

/// The tensors of the weights file `path`, checked finite and converted to `dtype` on
/// `device`, as a var builder. The check costs one pass over the weights at load, and lets a
/// NaN met later be blamed on the inputs or the step size, never on the weights.
pub(crate) fn var_builder(
    path: &Path,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        // x - x is 0 for every finite x and NaN for NaN and ±inf, in any dtype.
        let probe = t
            .sub(t)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        if !probe.is_finite() {
            return Err(ModelError::NonFiniteWeights {
                path: path.to_path_buf(),
                tensor: name.clone(),
            });
        }
    }
    let mut converted = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        converted.insert(name, t.to_dtype(dtype)?.to_device(device)?);
    }
    Ok(VarBuilder::from_tensors(converted, dtype, device))
}

/// Every tensor of `needed` is in `found` with its shape, and `found` holds nothing else.
/// Reports the first problem in name order.
pub(crate) fn check_tensors(
    path: &Path,
    needed: &BTreeMap<String, Vec<usize>>,
    found: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    let shapes = found
        .iter()
        .map(|(name, t)| (name.clone(), t.dims().to_vec()))
        .collect();
    check_shapes(path, needed, &shapes)
}

/// [`check_tensors`] on names and shapes alone (a safetensors header), so the checker finds a
/// card whose hyperparameters do not fit its weights without reading any weight.
pub fn check_shapes(
    path: &Path,
    needed: &BTreeMap<String, Vec<usize>>,
    found: &BTreeMap<String, Vec<usize>>,
) -> Result<(), ModelError> {
    for (name, expected) in needed {
        match found.get(name) {
            None => {
                return Err(ModelError::TensorMissing {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    expected: expected.clone(),
                })
            }
            Some(dims) if dims != expected => {
                return Err(ModelError::TensorShape {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    expected: expected.clone(),
                    found: dims.clone(),
                })
            }
            Some(_) => {}
        }
    }
    match found.keys().find(|k| !needed.contains_key(*k)) {
        Some(name) => Err(ModelError::TensorUnused {
            path: path.to_path_buf(),
            tensor: name.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::card::HyperValue;
    use crate::models::fixture::{random_weights, unet_card, write_network, write_random_unet};

    fn hp(
        channels: i64,
        mult: &[i64],
        blocks: i64,
        attention: bool,
    ) -> BTreeMap<String, HyperValue> {
        BTreeMap::from([
            ("channels".to_string(), HyperValue::Int(channels)),
            (
                "channel_mult".to_string(),
                HyperValue::List(mult.iter().map(|&m| HyperValue::Int(m)).collect()),
            ),
            ("num_res_blocks".to_string(), HyperValue::Int(blocks)),
            ("attention".to_string(), HyperValue::Bool(attention)),
            ("groups".to_string(), HyperValue::Int(4)),
        ])
    }

    fn small_card(kind: ModelKind, shape: [u32; 3]) -> ModelCard {
        unet_card(kind, shape, hp(8, &[1, 2, 2], 1, true))
    }

    fn load(card: &ModelCard, dtype: DType) -> (tempfile::TempDir, Network) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_random_unet(dir.path(), "net", card, 7).unwrap();
        let net = Network::load(&path, dtype, &Device::Cpu).unwrap();
        (dir, net)
    }

    fn input(shape: &[usize], dtype: DType, seed: i64) -> Tensor {
        let mut g = crate::random::generator(0, "network test", seed);
        crate::random::normal_tensor(&mut g, shape, dtype, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn rel_err(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }

    #[test]
    fn shapes_single_batch_and_colour() {
        let (_dir, net) = load(&small_card(ModelKind::Denoiser, [1, 28, 28]), DType::F32);
        let x = input(&[1, 28, 28], DType::F32, 0);
        let d = net.denoise(&x, 1.0).unwrap();
        assert_eq!(d.dims(), &[1, 28, 28]);
        assert_eq!(d.dtype(), DType::F32);
        let xb = input(&[3, 1, 28, 28], DType::F32, 1);
        let db = net.denoise(&xb, 0.5).unwrap();
        assert_eq!(db.dims(), &[3, 1, 28, 28]);
        // Each image of a batch is denoised on its own.
        let one = net.denoise(&xb.get(1).unwrap(), 0.5).unwrap();
        assert!(rel_err(&values(&db.get(1).unwrap()), &values(&one)) < 1e-5);
        assert_eq!(net.consistency(&xb, 3.0).unwrap().dims(), &[3, 1, 28, 28]);

        let (_dir, net) = load(&small_card(ModelKind::Consistency, [3, 12, 10]), DType::F32);
        let x = input(&[2, 3, 12, 10], DType::F32, 2);
        assert_eq!(net.denoise(&x, 2.0).unwrap().dims(), &[2, 3, 12, 10]);
        let err = net
            .denoise(&input(&[1, 12, 10], DType::F32, 3), 2.0)
            .unwrap_err();
        assert!(matches!(err, ModelError::Input { .. }), "{err}");
        let err = net.denoise(&x, 0.0).unwrap_err();
        assert!(matches!(err, ModelError::Sigma(_)), "{err}");
    }

    #[test]
    fn consistency_is_identity_at_sigma_min() {
        let (_dir, net) = load(&small_card(ModelKind::Consistency, [1, 8, 8]), DType::F64);
        let x = input(&[2, 1, 8, 8], DType::F64, 4);
        let f = net.consistency(&x, net.sigma_min()).unwrap();
        assert_eq!(values(&f), values(&x));
        let f = net.consistency(&x, 1.0).unwrap();
        assert!(rel_err(&values(&f), &values(&x)) > 1e-3);
    }

    #[test]
    fn zero_output_conv_leaves_the_skip_term() {
        let card = small_card(ModelKind::Denoiser, [1, 8, 8]);
        let mut weights = random_weights(&card, 3).unwrap();
        for name in ["conv_out.weight", "conv_out.bias"] {
            let zero = weights[name].zeros_like().unwrap();
            weights.insert(name.to_string(), zero);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_network(dir.path(), "net", &card, &weights).unwrap();
        let net = Network::load(&path, DType::F64, &Device::Cpu).unwrap();
        let x = input(&[1, 8, 8], DType::F64, 5);
        let xs = values(&x);
        let (sd, s_min) = (0.5, 0.002);
        for s in [0.01, 0.5, 2.0, 40.0] {
            let c_skip = sd * sd / (s * s + sd * sd);
            let want: Vec<f64> = xs.iter().map(|v| c_skip * v).collect();
            assert!(rel_err(&values(&net.denoise(&x, s).unwrap()), &want) < 1e-15);
            let c_skip = sd * sd / ((s - s_min) * (s - s_min) + sd * sd);
            let want: Vec<f64> = xs.iter().map(|v| c_skip * v).collect();
            assert!(rel_err(&values(&net.consistency(&x, s).unwrap()), &want) < 1e-15);
        }
        // The output scale: with only the output bias b set, D = c_skip x + c_out b.
        weights.insert(
            "conv_out.bias".to_string(),
            Tensor::new(&[0.25f32], &Device::Cpu).unwrap(),
        );
        let path = write_network(dir.path(), "net", &card, &weights).unwrap();
        let net = Network::load(&path, DType::F64, &Device::Cpu).unwrap();
        let s: f64 = 1.5;
        let c_skip = sd * sd / (s * s + sd * sd);
        let c_out = s * sd / (s * s + sd * sd).sqrt();
        let want: Vec<f64> = xs.iter().map(|v| c_skip * v + c_out * 0.25).collect();
        assert!(rel_err(&values(&net.denoise(&x, s).unwrap()), &want) < 1e-15);
    }

    #[test]
    fn input_vjp_matches_finite_differences() {
        // 8x8, and 7x5 where the decoder crops its upsampling to odd skip sizes.
        vjp_check([1, 8, 8]);
        vjp_check([2, 7, 5]);
    }

    fn vjp_check(image: [u32; 3]) {
        let (_dir, net) = load(&small_card(ModelKind::Denoiser, image), DType::F64);
        let shape: Vec<usize> = std::iter::once(2)
            .chain(image.iter().map(|&d| d as usize))
            .collect();
        let x0 = input(&shape, DType::F64, 6);
        let w = input(&shape, DType::F64, 7);
        let u = input(&shape, DType::F64, 8);
        let sigma = 0.7;
        // L(x) = <w, D(x, sigma)>; its gradient by autograd, dotted with u ...
        let loss = |x: &Tensor| -> Tensor {
            (net.denoise(x, sigma).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let var = candle_core::Var::from_tensor(&x0).unwrap();
        let grads = loss(var.as_tensor()).backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap();
        let vjp: f64 = (g * &u).unwrap().sum_all().unwrap().to_scalar().unwrap();
        // ... against the central difference along u.
        let h = 1e-5;
        let plus: f64 = loss(&(&x0 + (&u * h).unwrap()).unwrap())
            .to_scalar()
            .unwrap();
        let minus: f64 = loss(&(&x0 - (&u * h).unwrap()).unwrap())
            .to_scalar()
            .unwrap();
        let fd = (plus - minus) / (2.0 * h);
        assert!(
            ((vjp - fd) / fd).abs() < 1e-6,
            "autograd {vjp} vs difference {fd}"
        );
        // The same through the consistency function.
        let var = candle_core::Var::from_tensor(&x0).unwrap();
        let f = |x: &Tensor| {
            (net.consistency(x, 2.0).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = f(var.as_tensor()).backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap();
        let vjp: f64 = (g * &u).unwrap().sum_all().unwrap().to_scalar().unwrap();
        let plus: f64 = f(&(&x0 + (&u * h).unwrap()).unwrap()).to_scalar().unwrap();
        let minus: f64 = f(&(&x0 - (&u * h).unwrap()).unwrap()).to_scalar().unwrap();
        let fd = (plus - minus) / (2.0 * h);
        assert!(
            ((vjp - fd) / fd).abs() < 1e-6,
            "autograd {vjp} vs difference {fd}"
        );
    }

    #[test]
    fn weights_that_do_not_fit_name_the_tensor() {
        let card = small_card(ModelKind::Denoiser, [1, 8, 8]);
        let weights = random_weights(&card, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();

        let mut missing = weights.clone();
        missing.remove("mid.attn.qkv.weight");
        let path = write_network(dir.path(), "missing", &card, &missing).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::TensorMissing { .. }), "{msg}");
        assert!(
            msg.contains("`mid.attn.qkv.weight`") && msg.contains("[48, 16, 1, 1]"),
            "{msg}"
        );
        assert!(msg.contains("missing.safetensors"), "{msg}");

        let mut wrong = weights.clone();
        wrong.insert(
            "conv_in.weight".into(),
            Tensor::zeros((8, 2, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        let path = write_network(dir.path(), "wrong", &card, &wrong).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "tensor `conv_in.weight` in `{}` has shape [8, 2, 3, 3] but the network needs \
                 [8, 1, 3, 3]",
                path.display()
            )
        );

        let mut extra = weights.clone();
        extra.insert(
            "down.9.res.0.conv1.bias".into(),
            Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap(),
        );
        let path = write_network(dir.path(), "extra", &card, &extra).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(
            err.to_string().contains("`down.9.res.0.conv1.bias`"),
            "{err}"
        );

        // A card whose tensor list disagrees with the file.
        let mut listed = card.clone();
        listed.tensors = Some(BTreeMap::from([("conv_out.bias".to_string(), vec![3])]));
        let path = write_network(dir.path(), "listed", &listed, &weights).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor `conv_out.bias` is [1] in the weights but the card says [3]"
        );

        let mut arch = card.clone();
        arch.architecture = "dit".into();
        let path = write_network(dir.path(), "arch", &arch, &weights).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(
            err.to_string().contains("unknown architecture `dit`"),
            "{err}"
        );

        let mut range = card.clone();
        range.value_range = (0.0, 1.0);
        let path = write_network(dir.path(), "range", &range, &weights).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(
            err.to_string()
                .contains("value_range (0, 1) is not supported"),
            "{err}"
        );

        let mut bad = card.clone();
        bad.hyperparameters
            .insert("chanels".into(), HyperValue::Int(8));
        let path = write_network(dir.path(), "bad", &bad, &weights).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("`chanels`: unknown"), "{err}");

        let none = dir.path().join("none.safetensors");
        let err = Network::load(&none, DType::F32, &Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, ModelError::Format(FormatError::Missing(p)) if *p == none),
            "{err}"
        );

        // mapga's own weights without their card: the card is what is missing.
        let path = write_network(dir.path(), "orphan", &card, &weights).unwrap();
        std::fs::remove_file(card::card_path_for(&path)).unwrap();
        let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, ModelError::Card(CardError::Missing(_))),
            "{err}"
        );
    }
}
