//! Small random networks written to disk with their cards, for tests and examples: the same
//! files a training script writes, with seeded random weights.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::card::{HyperValue, ModelCard, ModelKind};
use super::network::ModelError;
use super::unet::{UNet, UNetConfig};

/// A valid U-Net card for images of `image_shape` with these hyperparameters and the default
/// sigmas; no tensor list.
pub fn unet_card(
    kind: ModelKind,
    image_shape: [u32; 3],
    hyperparameters: BTreeMap<String, HyperValue>,
) -> ModelCard {
    ModelCard {
        name: "random-unet".into(),
        kind,
        architecture: "unet".into(),
        image_shape,
        value_range: (-1.0, 1.0),
        sigma_data: 0.5,
        sigma_min: 0.002,
        sigma_max: 80.0,
        hyperparameters,
        provenance: Some("seeded random weights (mapga::models::fixture)".into()),
        weights_sha256: None,
        tensors: None,
    }
}

/// Seeded random weights for every tensor `card`'s U-Net needs: weights N(0, 1/fan_in),
/// biases N(0, 0.01), GroupNorm scales 1 + N(0, 0.01). Stored in f32.
pub fn random_weights(card: &ModelCard, seed: u64) -> Result<HashMap<String, Tensor>, ModelError> {
    let config =
        UNetConfig::from_hyperparameters(card.image_shape[0] as usize, &card.hyperparameters)
            .map_err(|error| ModelError::Config {
                card: PathBuf::from(&card.name),
                error,
            })?;
    let mut out = HashMap::new();
    for (name, shape) in UNet::tensor_shapes(&config)? {
        // One stream per tensor, keyed by its name, so adding a tensor changes no other.
        let mut rng = crate::random::generator(seed, &format!("random_unet {name}"), 0);
        let n: usize = shape.iter().product();
        let draws = crate::random::normals(&mut rng, n);
        let is_norm = name.contains("norm") && name.ends_with(".weight");
        let values: Vec<f32> = if shape.len() > 1 {
            let fan_in: usize = shape.iter().skip(1).product();
            let scale = 1.0 / (fan_in.max(1) as f64).sqrt();
            draws.iter().map(|d| (d * scale) as f32).collect()
        } else if is_norm {
            draws.iter().map(|d| (1.0 + 0.1 * d) as f32).collect()
        } else {
            draws.iter().map(|d| (0.1 * d) as f32).collect()
        };
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// Writes `dir/<stem>.safetensors` with seeded random weights and `dir/<stem>.ron` with
/// `card`; returns the weights path.
pub fn write_random_unet(
    dir: &Path,
    stem: &str,
    card: &ModelCard,
    seed: u64,
) -> Result<PathBuf, ModelError> {
    let weights = random_weights(card, seed)?;
    write_network(dir, stem, card, &weights)
}

/// Writes `weights` and `card` as `dir/<stem>.safetensors` and `dir/<stem>.ron`; returns the
/// weights path.
pub fn write_network(
    dir: &Path,
    stem: &str,
    card: &ModelCard,
    weights: &HashMap<String, Tensor>,
) -> Result<PathBuf, ModelError> {
    let path = dir.join(format!("{stem}.safetensors"));
    let write_err = |message: String| ModelError::Write {
        path: path.clone(),
        message,
    };
    candle_core::safetensors::save(weights, &path).map_err(|e| write_err(e.to_string()))?;
    let text = card.to_ron().map_err(|e| write_err(e.to_string()))?;
    std::fs::write(super::card::card_path_for(&path), text)
        .map_err(|e| write_err(e.to_string()))?;
    Ok(path)
}
