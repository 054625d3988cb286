//! The RON model card that sits beside every weights file.
//!
//! `models/mnist/denoiser.safetensors` comes with `models/mnist/denoiser.ron`:
//!
//! ```ron
//! ModelCard(
//!     name: "mnist-denoiser",
//!     kind: Denoiser,
//!     architecture: "unet",
//!     image_shape: (1, 28, 28),
//!     sigma_data: 0.5,
//!     hyperparameters: { "channels": 32, "channel_mult": [1, 2, 2], "dropout": 0.1 },
//!     provenance: "trained with scripts/train_mnist.py at 3f2a1c0",
//!     tensors: { "enc.0.conv.weight": [32, 1, 3, 3] },
//! )
//! ```
//!
//! Fields with defaults (`value_range`, the sigmas, `hyperparameters` and the optional ones)
//! may be left out; unknown fields are errors, so a typo is never silently ignored. Optional
//! fields may be written bare (`provenance: "..."`) or as `Some("...")`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::headers::TensorInfo;

/// What a model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelKind {
    /// A denoiser D(x, sigma) with EDM preconditioning.
    Denoiser,
    /// A consistency model f(x, t) = c_skip(t) x + c_out(t) F(x, t).
    Consistency,
    /// An image classifier (logits and penultimate-layer features), for evaluation.
    Classifier,
}

/// One architecture hyperparameter: a number, a flag, a name, or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HyperValue {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number: `32`.
    Int(i64),
    /// A number with a fraction: `0.1`.
    Float(f64),
    /// A name: `"silu"`.
    Text(String),
    /// A list: `[1, 2, 2]`.
    List(Vec<HyperValue>),
}

impl HyperValue {
    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            HyperValue::Int(i) => Some(i as f64),
            HyperValue::Float(x) => Some(x),
            _ => None,
        }
    }

    /// The value as a non-negative whole number, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            HyperValue::Int(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }
}

/// The model card: everything the checker and the loader need to know about a weights file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// A short name for messages and run manifests.
    pub name: String,
    /// Denoiser or consistency model.
    pub kind: ModelKind,
    /// The network architecture, e.g. `"unet"`.
    pub architecture: String,
    /// The image shape the model works on: `(channels, height, width)`.
    pub image_shape: [u32; 3],
    /// The pixel range the model was trained on; `(-1.0, 1.0)` unless given.
    #[serde(default = "default_value_range")]
    pub value_range: (f64, f64),
    /// The data standard deviation of EDM preconditioning; 0.5 unless given.
    #[serde(default = "default_sigma_data")]
    pub sigma_data: f64,
    /// The smallest noise level the model was trained on; 0.002 unless given.
    #[serde(default = "default_sigma_min")]
    pub sigma_min: f64,
    /// The largest noise level the model was trained on; 80 unless given.
    #[serde(default = "default_sigma_max")]
    pub sigma_max: f64,
    /// Architecture settings (channel counts, multipliers, dropout, ...); empty unless given.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, HyperValue>,
    /// Where the weights come from: training script and commit, or upstream checkpoint.
    #[serde(default)]
    pub provenance: Option<String>,
    /// The SHA-256 of the weights file, as 64 hex digits.
    #[serde(default)]
    pub weights_sha256: Option<String>,
    /// Expected shapes of some or all tensors in the weights, checked by
    /// [`check_card_against_weights`].
    #[serde(default)]
    pub tensors: Option<BTreeMap<String, Vec<u64>>>,
}

fn default_value_range() -> (f64, f64) {
    (-1.0, 1.0)
}

fn default_sigma_data() -> f64 {
    0.5
}

fn default_sigma_min() -> f64 {
    0.002
}

fn default_sigma_max() -> f64 {
    80.0
}

impl ModelCard {
    /// The card as pretty-printed RON, readable back by [`parse_card`].
    pub fn to_ron(&self) -> Result<String, ron::Error> {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default().struct_names(true))
    }

    /// Every value that makes no sense, in plain words; empty for a good card.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("`name` is empty".to_string());
        }
        if self.architecture.trim().is_empty() {
            problems.push("`architecture` is empty".to_string());
        }
        if self.image_shape.contains(&0) {
            problems.push(format!(
                "`image_shape` {:?} has a zero dimension",
                self.image_shape
            ));
        }
        let (lo, hi) = self.value_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            problems.push(format!(
                "`value_range` ({lo}, {hi}) must be two finite numbers, the smaller first"
            ));
        }
        if !(self.sigma_data.is_finite() && self.sigma_data > 0.0) {
            problems.push(format!(
                "`sigma_data` is {} but must be positive",
                self.sigma_data
            ));
        }
        if !(self.sigma_min.is_finite() && self.sigma_min >= 0.0) {
            problems.push(format!(
                "`sigma_min` is {} but must be zero or positive",
                self.sigma_min
            ));
        }
        if !self.sigma_max.is_finite() {
            problems.push(format!("`sigma_max` is {}", self.sigma_max));
        } else if self.sigma_min >= self.sigma_max {
            problems.push(format!(
                "`sigma_min` ({}) must be smaller than `sigma_max` ({})",
                self.sigma_min, self.sigma_max
            ));
        }
        if let Some(hash) = &self.weights_sha256 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "`weights_sha256` \"{hash}\" is not 64 hexadecimal digits"
                ));
            }
        }
        problems
    }
}

/// A model card that cannot be used, or that does not fit its weights.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// No card beside the weights.
    #[error(
        "model card `{}` not found: mapga's own networks, and checkpoints that are not of \
         the ADM / consistency-model family, need a RON card with the same name and a `.ron` \
         extension beside them",
        .0.display()
    )]
    Missing(PathBuf),
    /// The card exists but cannot be read.
    #[error("cannot read model card `{}`: {error}", .path.display())]
    Read {
        /// The card.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The card is not valid RON, or has a missing, unknown or mistyped field.
    #[error("model card `{}`, line {line}, column {col}: {message}", .path.display())]
    Syntax {
        /// The card.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        col: usize,
        /// What RON said.
        message: String,
    },
    /// The card parses but some values make no sense.
    #[error("model card `{}`: {}", .path.display(), .problems.join("; "))]
    Invalid {
        /// The card.
        path: PathBuf,
        /// Each bad value, in plain words.
        problems: Vec<String>,
    },
    /// A tensor has another shape in the weights than in the card.
    #[error("tensor `{tensor}` is {weights:?} in the weights but the card says {card:?}")]
    TensorShape {
        /// The tensor's name.
        tensor: String,
        /// Its shape in the weights file.
        weights: Vec<u64>,
        /// Its shape in the card.
        card: Vec<u64>,
    },
    /// A tensor the card lists is not in the weights.
    #[error("tensor `{tensor}` listed in the card is missing from the weights")]
    TensorMissing {
        /// The tensor's name.
        tensor: String,
    },
    /// The weights file is not the one the card was written for: its SHA-256 differs from
    /// the card's `weights_sha256`.
    #[error(
        "`{}` is not the file its model card `{}` was written for: the card's \
         `weights_sha256` is {expected} but the file's SHA-256 is {found}",
        .weights.display(),
        .card.display()
    )]
    WeightsHash {
        /// The weights file.
        weights: PathBuf,
        /// The card naming the expected hash.
        card: PathBuf,
        /// The card's hash.
        expected: String,
        /// The file's hash.
        found: String,
    },
    /// The weights file could not be read to verify it.
    #[error("cannot verify `{}` against its model card: {error}", .weights.display())]
    Verify {
        /// The weights file.
        weights: PathBuf,
        /// Why it could not be read.
        error: String,
    },
}

/// Verifies the weights file against the card's `weights_sha256`, when the card gives one and
/// `weights` is a file (a diffusers folder has no single hash). The hash is streamed and
/// remembered ([`crate::io::hash::sha256_file`]), so a second verification of an unchanged
/// file is free.
pub fn verify_weights(card: &ModelCard, card_path: &Path, weights: &Path) -> Result<(), CardError> {
    let Some(expected) = &card.weights_sha256 else {
        return Ok(());
    };
    if weights.is_dir() {
        return Ok(());
    }
    let found = crate::io::hash::sha256_file(weights).map_err(|e| CardError::Verify {
        weights: weights.to_path_buf(),
        error: e.to_string(),
    })?;
    if found.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(CardError::WeightsHash {
            weights: weights.to_path_buf(),
            card: card_path.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            found,
        })
    }
}

/// The card that belongs to a weights file: the same path with a `.ron` extension
/// (`models/mnist/denoiser.safetensors` -> `models/mnist/denoiser.ron`).
pub fn card_path_for(weights: &Path) -> PathBuf {
    weights.with_extension("ron")
}

/// Reads, parses and validates the model card at `path`.
pub fn load_card(path: &Path) -> Result<ModelCard, CardError> {
    let text = std::fs::read_to_string(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => CardError::Missing(path.to_path_buf()),
        _ => CardError::Read {
            path: path.to_path_buf(),
            error,
        },
    })?;
    parse_card(&text, path)
}

/// Parses and validates the text of a model card; `path` is used only in errors.
pub fn parse_card(text: &str, path: &Path) -> Result<ModelCard, CardError> {
    let options =
        ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    let card: ModelCard = options.from_str(text).map_err(|e| CardError::Syntax {
        path: path.to_path_buf(),
        line: e.position.line,
        col: e.position.col,
        message: ron_message(&e.code),
    })?;
    let problems = card.problems();
    if problems.is_empty() {
        Ok(card)
    } else {
        Err(CardError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// RON's message, reworded for the common mistakes: an unknown or missing field and an unknown
/// kind get a short lower-case message, with the closest valid name when one is close.
fn ron_message(error: &ron::Error) -> String {
    match error {
        ron::Error::NoSuchStructField {
            expected, found, ..
        } => format!("unknown field `{found}`{}", did_you_mean(found, expected)),
        ron::Error::NoSuchEnumVariant {
            expected, found, ..
        } => format!(
            "unknown value `{found}`{} (expected one of: {})",
            did_you_mean(found, expected),
            expected.join(", ")
        ),
        ron::Error::MissingStructField { field, .. } => format!("missing field `{field}`"),
        ron::Error::DuplicateStructField { field, .. } => {
            format!("field `{field}` is given twice")
        }
        other => other.to_string(),
    }
}

/// `, did you mean `x`?` for the candidate closest to `found`, or nothing if none is close.
fn did_you_mean(found: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(found, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Checks the tensors listed in `card.tensors` (if any) against a weights header: each must
/// exist with exactly that shape. Returns the first problem in name order; see
/// [`tensor_mismatches`] for all of them.
pub fn check_card_against_weights(
    card: &ModelCard,
    weights: &BTreeMap<String, TensorInfo>,
) -> Result<(), CardError> {
    match tensor_mismatches(card, weights).into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Every tensor listed in `card.tensors` that is missing from the weights or has another
/// shape there, in name order.
pub fn tensor_mismatches(
    card: &ModelCard,
    weights: &BTreeMap<String, TensorInfo>,
) -> Vec<CardError> {
    let Some(expected) = &card.tensors else {
        return Vec::new();
    };
    expected
        .iter()
        .filter_map(|(tensor, shape)| match weights.get(tensor) {
            None => Some(CardError::TensorMissing {
                tensor: tensor.clone(),
            }),
            Some(info) if &info.shape != shape => Some(CardError::TensorShape {
                tensor: tensor.clone(),
                weights: info.shape.clone(),
                card: shape.clone(),
            }),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = r#"// The MNIST denoiser.
ModelCard(
    name: "mnist-denoiser",
    kind: Denoiser,
    architecture: "unet",
    image_shape: (1, 28, 28),
    sigma_max: 80,
    hyperparameters: {
        "channels": 32,
        "channel_mult": [1, 2, 2],
        "dropout": 0.1,
        "activation": "silu",
        "attention": false,
    },
    provenance: "scripts/train_mnist.py at 3f2a1c0",
    tensors: Some({ "enc.0.conv.weight": [32, 1, 3, 3], "out.bias": [1] }),
)
"#;

    fn path() -> &'static Path {
        Path::new("models/mnist/denoiser.ron")
    }

    #[test]
    fn parses_with_defaults() {
        let card = parse_card(CARD, path()).unwrap();
        assert_eq!(card.kind, ModelKind::Denoiser);
        assert_eq!(card.image_shape, [1, 28, 28]);
        assert_eq!(card.value_range, (-1.0, 1.0));
        assert_eq!(
            (card.sigma_data, card.sigma_min, card.sigma_max),
            (0.5, 0.002, 80.0)
        );
        assert_eq!(card.hyperparameters["channels"].as_u64(), Some(32));
        assert_eq!(card.hyperparameters["dropout"].as_f64(), Some(0.1));
        assert_eq!(
            card.hyperparameters["channel_mult"],
            HyperValue::List(vec![
                HyperValue::Int(1),
                HyperValue::Int(2),
                HyperValue::Int(2)
            ])
        );
        assert_eq!(
            card.hyperparameters["activation"],
            HyperValue::Text("silu".into())
        );
        assert_eq!(card.hyperparameters["attention"], HyperValue::Bool(false));
        assert_eq!(
            card.provenance.as_deref(),
            Some("scripts/train_mnist.py at 3f2a1c0")
        );
        assert_eq!(card.weights_sha256, None);
        assert_eq!(card.tensors.as_ref().map(BTreeMap::len), Some(2));
    }

    #[test]
    fn round_trips_through_ron() {
        let mut card = parse_card(CARD, path()).unwrap();
        card.kind = ModelKind::Consistency;
        card.weights_sha256 = Some("ab".repeat(32));
        card.value_range = (0.0, 1.0);
        let text = card.to_ron().unwrap();
        assert_eq!(parse_card(&text, path()).unwrap(), card);
        // A minimal card, without the struct name.
        let minimal =
            r#"(name: "cm", kind: Consistency, architecture: "unet", image_shape: (3, 64, 64))"#;
        let card = parse_card(minimal, path()).unwrap();
        assert_eq!(card.tensors, None);
        assert_eq!(parse_card(&card.to_ron().unwrap(), path()).unwrap(), card);
    }

    #[test]
    fn typo_names_the_line() {
        let text = CARD.replace("sigma_max: 80", "sigma_mx: 80");
        let err = parse_card(&text, path()).unwrap_err();
        assert!(matches!(err, CardError::Syntax { line: 7, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("model card `models/mnist/denoiser.ron`, line 7, column"),
            "{msg}"
        );
        assert!(
            msg.ends_with(": unknown field `sigma_mx` (did you mean `sigma_max`?)"),
            "{msg}"
        );

        let text = CARD.replace("kind: Denoiser", "kind: Denoisr");
        let err = parse_card(&text, path()).unwrap_err();
        assert!(matches!(err, CardError::Syntax { line: 4, .. }), "{err}");
        assert!(
            err.to_string().contains(
                "unknown value `Denoisr` (did you mean `Denoiser`?) \
                 (expected one of: Denoiser, Consistency, Classifier)"
            ),
            "{err}"
        );

        let text = CARD.replace("image_shape: (1, 28, 28),\n", "");
        let err = parse_card(&text, path()).unwrap_err().to_string();
        assert!(err.ends_with("missing field `image_shape`"), "{err}");
        let text = CARD.replace("sigma_max: 80", "sigma_max: 80, sigma_max: 70");
        let err = parse_card(&text, path()).unwrap_err().to_string();
        assert!(err.ends_with("field `sigma_max` is given twice"), "{err}");

        let err = parse_card("ModelCard(name: ", path()).unwrap_err();
        assert!(matches!(err, CardError::Syntax { line: 1, .. }), "{err}");
    }

    #[test]
    fn invalid_values() {
        let text = CARD
            .replace(
                "sigma_max: 80",
                "sigma_max: 80, sigma_min: 90, sigma_data: 0",
            )
            .replace("(1, 28, 28)", "(1, 0, 28)");
        let err = parse_card(&text, path()).unwrap_err();
        let CardError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("`sigma_min` (90) must be smaller than `sigma_max` (80)"),
            "{msg}"
        );
        assert!(
            msg.contains("`sigma_data` is 0 but must be positive"),
            "{msg}"
        );
        assert!(
            msg.contains("`image_shape` [1, 0, 28] has a zero dimension"),
            "{msg}"
        );
        let text = CARD.replace("sigma_max: 80", "weights_sha256: \"xyz\"");
        let err = parse_card(&text, path()).unwrap_err().to_string();
        assert!(err.contains("not 64 hexadecimal digits"), "{err}");
    }

    #[test]
    fn weights_are_verified_against_the_cards_hash() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("cm.safetensors");
        std::fs::write(&weights, b"the weights").unwrap();
        let card_path = card_path_for(&weights);
        let mut card = parse_card(CARD, path()).unwrap();
        // No hash in the card: nothing to verify.
        assert!(verify_weights(&card, &card_path, &weights).is_ok());
        card.weights_sha256 = Some(crate::io::hash::sha256_hex(b"the weights").to_uppercase());
        assert!(verify_weights(&card, &card_path, &weights).is_ok());
        std::fs::write(&weights, b"other weights").unwrap();
        let err = verify_weights(&card, &card_path, &weights).unwrap_err();
        assert!(matches!(err, CardError::WeightsHash { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("cm.safetensors") && msg.contains("cm.ron"),
            "{msg}"
        );
        assert!(
            msg.contains(&crate::io::hash::sha256_hex(b"other weights")),
            "{msg}"
        );
        std::fs::remove_file(&weights).unwrap();
        let err = verify_weights(&card, &card_path, &weights).unwrap_err();
        assert!(matches!(err, CardError::Verify { .. }), "{err}");
    }

    #[test]
    fn card_files() {
        let weights = Path::new("models/mnist/denoiser.safetensors");
        assert_eq!(
            card_path_for(weights),
            Path::new("models/mnist/denoiser.ron")
        );
        let dir = tempfile::tempdir().unwrap();
        let card_path = card_path_for(&dir.path().join("denoiser.safetensors"));
        let err = load_card(&card_path).unwrap_err();
        assert!(matches!(&err, CardError::Missing(p) if *p == card_path));
        assert!(err.to_string().contains("denoiser.ron` not found"), "{err}");
        std::fs::write(&card_path, CARD).unwrap();
        assert_eq!(load_card(&card_path).unwrap().name, "mnist-denoiser");
        std::fs::write(&card_path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(load_card(&card_path), Err(CardError::Read { .. })));
    }

    #[test]
    fn tensors_against_weights() {
        let card = parse_card(CARD, path()).unwrap();
        let info = |shape: &[u64]| TensorInfo {
            dtype: "F32".into(),
            shape: shape.to_vec(),
        };
        let mut weights = BTreeMap::from([
            ("enc.0.conv.weight".to_string(), info(&[32, 1, 3, 3])),
            ("out.bias".to_string(), info(&[1])),
            ("not.in.card".to_string(), info(&[7])),
        ]);
        assert!(check_card_against_weights(&card, &weights).is_ok());

        weights.insert("enc.0.conv.weight".into(), info(&[32, 3, 3, 3]));
        let err = check_card_against_weights(&card, &weights).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor `enc.0.conv.weight` is [32, 3, 3, 3] in the weights but the card says [32, 1, 3, 3]"
        );
        weights.remove("out.bias");
        let all = tensor_mismatches(&card, &weights);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1].to_string(),
            "tensor `out.bias` listed in the card is missing from the weights"
        );

        let mut no_list = card.clone();
        no_list.tensors = None;
        assert!(check_card_against_weights(&no_list, &BTreeMap::new()).is_ok());
    }
}
