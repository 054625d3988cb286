//! The small CNN digit classifier used to score samples and restorations (classifier accuracy,
//! confidence, and the Fréchet distance between its penultimate-layer features).
//!
//! The Rust twin of `train/mapga_train/classifier.py`, architecture `"mnist_cnn"` in the card:
//!
//! ```text
//! conv1 3x3 (C -> 32, padding 1), ReLU, max-pool 2
//! conv2 3x3 (32 -> 64, padding 1), ReLU, max-pool 2
//! fc1 (64 * H/4 * W/4 -> 128), ReLU          <- the features
//! fc2 (128 -> classes)                        <- the logits
//! ```
//!
//! Tensor names `conv1`, `conv2`, `fc1`, `fc2` (`.weight`, `.bias`), PyTorch `state_dict` style;
//! the number of classes is read from `fc2.weight`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::card::{self, ModelCard, ModelKind};
use super::network::ModelError;
use crate::kernels::Conv2d;

/// The architecture name a classifier's card gives.
pub const ARCHITECTURE: &str = "mnist_cnn";

/// Width of the penultimate layer, the features the Fréchet distance compares.
pub const FEATURES: usize = 128;

/// A trained digit classifier with its card.
#[derive(Debug, Clone)]
pub struct Classifier {
    card: ModelCard,
    path: PathBuf,
    shape: Vec<usize>,
    classes: usize,
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

/// Every tensor the architecture needs, with its shape, for images `[c, h, w]` and `classes`.
pub fn tensor_shapes(shape: [usize; 3], classes: usize) -> Vec<(String, Vec<usize>)> {
    let [c, h, w] = shape;
    let flat = 64 * (h / 4) * (w / 4);
    [
        ("conv1.weight", vec![32, c, 3, 3]),
        ("conv1.bias", vec![32]),
        ("conv2.weight", vec![64, 32, 3, 3]),
        ("conv2.bias", vec![64]),
        ("fc1.weight", vec![FEATURES, flat]),
        ("fc1.bias", vec![FEATURES]),
        ("fc2.weight", vec![classes, FEATURES]),
        ("fc2.bias", vec![classes]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect()
}

impl Classifier {
    /// Loads the weights at `weights` with the card beside them (`.ron`, kind `Classifier`,
    /// architecture `mnist_cnn`). A missing or mis-shaped tensor is an error naming it.
    pub fn load(weights: &Path, dtype: DType, device: &Device) -> Result<Classifier, ModelError> {
        let card_path = card::card_path_for(weights);
        let card = card::load_card(&card_path)?;
        check_card(&card, &card_path)?;
        card::verify_weights(&card, &card_path, weights)?;
        let shape: Vec<usize> = card.image_shape.iter().map(|&d| d as usize).collect();
        let tensors = candle_core::safetensors::load(weights, &Device::Cpu).map_err(|e| {
            ModelError::Read {
                path: weights.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        let shapes = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.dims().to_vec()))
            .collect();
        let classes = check_shapes(weights, [shape[0], shape[1], shape[2]], &shapes)?;
        let vb = super::network::var_builder(weights, tensors, dtype, device)?;
        let flat = 64 * (shape[1] / 4) * (shape[2] / 4);
        Ok(Classifier {
            conv1: Conv2d::load(shape[0], 32, 3, 1, 1, vb.pp("conv1"))?,
            conv2: Conv2d::load(32, 64, 3, 1, 1, vb.pp("conv2"))?,
            fc1: candle_nn::linear(flat, FEATURES, vb.pp("fc1"))?,
            fc2: candle_nn::linear(FEATURES, classes, vb.pp("fc2"))?,
            card,
            path: weights.to_path_buf(),
            shape,
            classes,
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The weights file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image shape `[C, H, W]` it classifies.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `[B, C, H, W]` (or one `[C, H, W]` image, as a batch of one) checked against the card.
    fn batch(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let dims = x.dims();
        let batch = match dims.len() {
            3 => x.unsqueeze(0)?,
            4 => x.clone(),
            _ => {
                return Err(ModelError::Input {
                    expected: self.shape.clone(),
                    found: dims.to_vec(),
                })
            }
        };
        if batch.dims()[1..] != self.shape[..] {
            return Err(ModelError::Input {
                expected: self.shape.clone(),
                found: dims.to_vec(),
            });
        }
        Ok(batch)
    }

    /// The penultimate-layer features `[B, 128]` of images in [-1, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.batch(x)?;
        let h = self.conv1.forward(&x)?.relu()?.max_pool2d(2)?;
        let h = self.conv2.forward(&h)?.relu()?.max_pool2d(2)?;
        Ok(self.fc1.forward(&h.flatten_from(1)?)?.relu()?)
    }

    /// The logits `[B, classes]` of images in [-1, 1].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.logits_of_features(&self.features(x)?)
    }

    /// The logits `[B, classes]` from features `[B, 128]` already computed by [`Self::features`].
    pub fn logits_of_features(&self, features: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.fc2.forward(features)?)
    }
}

/// Checks a file's tensor names and shapes (from its header or its tensors) against the
/// network of `shape`: every tensor present with its shape, nothing else. Returns the number
/// of classes, which the file decides (`fc2.weight` is `[classes, 128]`).
pub fn check_shapes(
    weights: &Path,
    shape: [usize; 3],
    found: &BTreeMap<String, Vec<usize>>,
) -> Result<usize, ModelError> {
    let classes = found
        .get("fc2.weight")
        .and_then(|dims| dims.first().copied())
        .ok_or_else(|| ModelError::TensorMissing {
            path: weights.to_path_buf(),
            tensor: "fc2.weight".into(),
            expected: vec![10, FEATURES],
        })?;
    let needed = tensor_shapes(shape, classes).into_iter().collect();
    super::network::check_shapes(weights, &needed, found)?;
    Ok(classes)
}

/// The checks a classifier card must pass before any weights are read.
pub fn check_card(card: &ModelCard, card_path: &Path) -> Result<(), ModelError> {
    if card.kind != ModelKind::Classifier || card.architecture != ARCHITECTURE {
        return Err(ModelError::Kind {
            card: card_path.to_path_buf(),
            found: format!("{:?} (architecture `{}`)", card.kind, card.architecture),
            expected: format!("Classifier (architecture `{ARCHITECTURE}`)"),
        });
    }
    if card.value_range != (-1.0, 1.0) {
        return Err(ModelError::ValueRange {
            card: card_path.to_path_buf(),
            range: card.value_range,
        });
    }
    Ok(())
}
