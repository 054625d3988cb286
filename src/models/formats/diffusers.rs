//! diffusers exports of the ADM / consistency-model U-Net (`openai/diffusers-cd_imagenet64_lpips`
//! and the like): a folder with `unet/config.json` (a `UNet2DModel` configuration) and
//! `unet/diffusion_pytorch_model.safetensors` under diffusers' names.
//!
//! [`read`] maps the tensors back to the official `state_dict` names so one network
//! ([`crate::models::adm`]) serves both. The walk mirrors the one of diffusers' conversion
//! script: down block `i` holds `input_blocks` `resnets.j` / `attentions.j` per residual block
//! and `downsamplers.0` between levels; the middle block's `resnets.0`, `attentions.0`,
//! `resnets.1`; up block `i` (level `levels - 1 - i`) the `output_blocks` of that level and its
//! `upsamplers.0`. Residual blocks: `norm1`/`conv1`/`time_emb_proj`/`norm2`/`conv2`/
//! `conv_shortcut` for `in_layers.0`/`in_layers.2`/`emb_layers.1`/`out_layers.0`/
//! `out_layers.3`/`skip_connection`. Attention: `group_norm` for `norm`; `to_q`, `to_k`, `to_v`
//! (`[C, C]`) concatenated into `qkv` (`[3C, C, 1, 1]`, the (three, heads, d) order); `to_out.0`
//! for `proj_out`. Older exports named the attention tensors `query`, `key`, `value` and
//! `proj_attn`; both are read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::Deserialize;

use super::{Format, FormatError, Weights};
use crate::models::adm::{AdmConfig, AdmUNet, Heads, QkvOrder};

/// The fields of a diffusers `UNet2DModel` `config.json` that decide the architecture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UNetConfig {
    /// The model class (`UNet2DModel`).
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// The training resolution.
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Channels out (6 with a learned variance).
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels of each level.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per level.
    pub layers_per_block: usize,
    /// Block types of the encoder levels (`AttnDownBlock2D`, `ResnetDownsampleBlock2D`, ...).
    pub down_block_types: Vec<String>,
    /// Block types of the decoder levels.
    #[serde(default)]
    pub up_block_types: Vec<String>,
    /// Channels per attention head.
    #[serde(default)]
    pub attention_head_dim: Option<usize>,
    /// `scale_shift` or `default`.
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
    /// Classes of a class-conditional model.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// GroupNorm groups.
    #[serde(default)]
    pub norm_num_groups: Option<usize>,
    /// `resnet` (residual up/down blocks) or `conv`.
    #[serde(default)]
    pub downsample_type: Option<String>,
    /// Whether the time features are [cos, sin] (the ADM order).
    #[serde(default)]
    pub flip_sin_to_cos: Option<bool>,
    /// Shift of the frequency exponent's denominator (0 for ADM).
    #[serde(default)]
    pub freq_shift: Option<f64>,
    /// `positional` for ADM.
    #[serde(default)]
    pub time_embedding_type: Option<String>,
}

fn three() -> usize {
    3
}

impl UNetConfig {
    /// The ADM configuration this diffusers configuration describes.
    pub fn to_adm(&self) -> Result<AdmConfig, String> {
        if let Some(class) = &self.class_name {
            if class != "UNet2DModel" {
                return Err(format!(
                    "`_class_name` is {class}; only UNet2DModel (the ADM / consistency-model \
                     U-Net) is supported"
                ));
            }
        }
        if self.flip_sin_to_cos == Some(false) || self.freq_shift.is_some_and(|f| f != 0.0) {
            return Err(
                "the time embedding is not the ADM one (needs flip_sin_to_cos true and \
                 freq_shift 0)"
                    .into(),
            );
        }
        if let Some(t) = &self.time_embedding_type {
            if t != "positional" {
                return Err(format!("time_embedding_type `{t}` is not supported"));
            }
        }
        let mc = *self
            .block_out_channels
            .first()
            .ok_or("block_out_channels is empty")?;
        let channel_mult = self
            .block_out_channels
            .iter()
            .map(|&c| {
                if mc > 0 && c % mc == 0 {
                    Ok(c / mc)
                } else {
                    Err(format!(
                        "block_out_channels {:?} are not multiples of the first",
                        self.block_out_channels
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.down_block_types.len() != channel_mult.len() {
            return Err(format!(
                "{} down_block_types for {} levels",
                self.down_block_types.len(),
                channel_mult.len()
            ));
        }
        let attention_ds = self
            .down_block_types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.starts_with("Attn"))
            .map(|(l, _)| 1 << l)
            .collect();
        let resblock_updown = match self.downsample_type.as_deref() {
            Some("resnet") => true,
            Some("conv") => false,
            Some(other) => return Err(format!("downsample_type `{other}` is not supported")),
            // Before `downsample_type` existed, the block names said it.
            None => self
                .down_block_types
                .iter()
                .any(|t| t.contains("Downsample")),
        };
        let config = AdmConfig {
            in_channels: self.in_channels,
            model_channels: mc,
            out_channels: self.out_channels,
            num_res_blocks: self.layers_per_block,
            attention_ds,
            channel_mult,
            num_classes: self.num_class_embeds,
            heads: Heads::Channels(self.attention_head_dim.unwrap_or(64)),
            scale_shift: self.resnet_time_scale_shift.as_deref() == Some("scale_shift"),
            resblock_updown,
            qkv_order: QkvOrder::Flash,
            attention_1d: false,
            groups: self.norm_num_groups.unwrap_or(32),
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Where an official tensor comes from in a diffusers export.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// One tensor under this name (1x1 conv weights may be stored squeezed).
    One(String),
    /// `qkv`: the concatenation of the q, k and v tensors of this attention prefix.
    Qkv(String, &'static str),
}

/// The residual-block and attention suffixes, official -> diffusers.
const RES_NAMES: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];

/// The diffusers prefix of each official block prefix (`input_blocks.4.0` ->
/// `down_blocks.0.downsamplers.0`), for a configuration.
fn block_prefixes(config: &AdmConfig) -> BTreeMap<String, String> {
    let mut map = BTreeMap::from([
        (
            "middle_block.0".to_string(),
            "mid_block.resnets.0".to_string(),
        ),
        (
            "middle_block.1".to_string(),
            "mid_block.attentions.0".to_string(),
        ),
        (
            "middle_block.2".to_string(),
            "mid_block.resnets.1".to_string(),
        ),
    ]);
    let levels = config.levels();
    let mut cur = 1;
    for i in 0..levels {
        for j in 0..config.num_res_blocks {
            map.insert(
                format!("input_blocks.{cur}.0"),
                format!("down_blocks.{i}.resnets.{j}"),
            );
            map.insert(
                format!("input_blocks.{cur}.1"),
                format!("down_blocks.{i}.attentions.{j}"),
            );
            cur += 1;
        }
        if i + 1 < levels {
            let down = format!("down_blocks.{i}.downsamplers.0");
            map.insert(format!("input_blocks.{cur}.0.op"), format!("{down}.conv"));
            map.insert(format!("input_blocks.{cur}.0"), down);
            cur += 1;
        }
    }
    let mut cur = 0;
    for i in 0..levels {
        let attention = config.attention_ds.contains(&(1 << (levels - 1 - i)));
        for j in 0..=config.num_res_blocks {
            map.insert(
                format!("output_blocks.{cur}.0"),
                format!("up_blocks.{i}.resnets.{j}"),
            );
            map.insert(
                format!("output_blocks.{cur}.1"),
                format!("up_blocks.{i}.attentions.{j}"),
            );
            cur += 1;
        }
        if i + 1 < levels {
            let up = format!("up_blocks.{i}.upsamplers.0");
            let last = cur - 1;
            let k = if attention { 2 } else { 1 };
            map.insert(
                format!("output_blocks.{last}.{k}.conv"),
                format!("{up}.conv"),
            );
            map.insert(format!("output_blocks.{last}.{k}"), up);
        }
    }
    map
}

/// The diffusers source of the official tensor `name`.
fn source_of(name: &str, prefixes: &BTreeMap<String, String>) -> Option<Source> {
    let top = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.", "class_embedding."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (official, diffusers) in top {
        if let Some(rest) = name.strip_prefix(official) {
            return Some(Source::One(format!("{diffusers}{rest}")));
        }
    }
    // The longest official block prefix that `name` starts with.
    let (prefix, target) = prefixes
        .iter()
        .filter(|(p, _)| name.starts_with(&format!("{p}.")))
        .max_by_key(|(p, _)| p.len())?;
    let rest = &name[prefix.len() + 1..];
    let (layer, param) = rest.rsplit_once('.')?;
    if prefix.ends_with(".op") || prefix.ends_with(".conv") {
        return Some(Source::One(format!("{target}.{rest}")));
    }
    if let Some((_, d)) = RES_NAMES.iter().find(|(o, _)| *o == layer) {
        return Some(Source::One(format!("{target}.{d}.{param}")));
    }
    match layer {
        "norm" => Some(Source::One(format!("{target}.group_norm.{param}"))),
        "qkv" => Some(Source::Qkv(
            target.clone(),
            if param == "weight" { "weight" } else { "bias" },
        )),
        "proj_out" => Some(Source::One(format!("{target}.to_out.0.{param}"))),
        _ => None,
    }
}

/// The folder holding `config.json` and the weights: the path itself, its `unet` subfolder,
/// or the folder of a `config.json` path.
fn unet_folder(path: &Path) -> PathBuf {
    if path.is_file() {
        return path.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    let unet = path.join("unet");
    if unet.join("config.json").is_file() {
        unet
    } else {
        path.to_path_buf()
    }
}

/// Reads a diffusers export (the folder, its `unet` subfolder or its `config.json`): the
/// configuration and the tensors under their official names.
pub fn read(path: &Path) -> Result<Weights, FormatError> {
    let folder = unet_folder(path);
    let fail = |message: String| FormatError::Diffusers {
        path: folder.clone(),
        message,
    };
    let config_path = folder.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| fail(format!("cannot read config.json: {e}")))?;
    let config: UNetConfig =
        serde_json::from_str(&text).map_err(|e| fail(format!("config.json: {e}")))?;
    let adm = config
        .to_adm()
        .map_err(|e| fail(format!("config.json: {e}")))?;
    let weights_path = ["diffusion_pytorch_model.safetensors", "model.safetensors"]
        .iter()
        .map(|n| folder.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            fail(
                "no diffusion_pytorch_model.safetensors beside config.json (a .bin export \
                 can be converted with diffusers' save_pretrained(safe_serialization=True))"
                    .into(),
            )
        })?;
    let stored = super::safetensors::read(&weights_path)?;
    let tensors = rename(&adm, &stored).map_err(fail)?;
    Ok(Weights {
        tensors,
        format: Format::Diffusers,
        diffusers: Some(config),
        nested_key: None,
    })
}

/// The tensors of `stored` (diffusers names) under the official names of `config`: every
/// tensor the network needs must be there, and every stored tensor must be used.
fn rename(
    config: &AdmConfig,
    stored: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>, String> {
    let needed = AdmUNet::tensor_shapes(config).map_err(|e| e.to_string())?;
    let prefixes = block_prefixes(config);
    let mut used = std::collections::BTreeSet::new();
    let mut take = |name: &str| -> Result<Tensor, String> {
        let alt = name
            .replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.");
        for candidate in [name, alt.as_str()] {
            if let Some(t) = stored.get(candidate) {
                used.insert(candidate.to_string());
                return Ok(t.clone());
            }
        }
        Err(if name.starts_with("mid_block.attentions.0.group_norm.") {
            format!(
                "`{name}` is missing: diffusers exports made before the fix of diffusers \
                 issue #4414 dropped the middle attention's GroupNorm of scale-shift models \
                 (their samples ignore the class label); download the re-uploaded weights"
            )
        } else {
            format!("`{name}` is missing from the weights")
        })
    };
    let mut out = BTreeMap::new();
    for (name, shape) in &needed {
        let source = source_of(name, &prefixes)
            .ok_or_else(|| format!("no diffusers name is known for `{name}`"))?;
        let tensor = match source {
            Source::One(n) => take(&n)?,
            Source::Qkv(prefix, param) => {
                let parts = ["to_q", "to_k", "to_v"]
                    .iter()
                    .map(|p| take(&format!("{prefix}.{p}.{param}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor::cat(&parts, 0).map_err(|e| e.to_string())?
            }
        };
        let count: usize = shape.iter().product();
        if tensor.elem_count() != count {
            return Err(format!(
                "`{name}` needs shape {shape:?} but the weights give {:?}",
                tensor.dims()
            ));
        }
        out.insert(
            name.clone(),
            tensor
                .reshape(shape.as_slice())
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(extra) = stored.keys().find(|k| !used.contains(*k)) {
        return Err(format!(
            "tensor `{extra}` is not part of the network config.json describes"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::presets;
    use super::*;

    /// The committed key maps of the two consistency-model configurations (re-derived from
    /// diffusers' conversion script) agree with ours, tensor by tensor.
    #[test]
    fn key_maps_match_the_published_ones() {
        for (file, config) in [
            ("keymap_cm_imagenet64.tsv", presets::cm_imagenet64()),
            ("keymap_cm_lsun256.tsv", presets::cm_lsun256()),
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/adm")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let prefixes = block_prefixes(&config);
            let mut rows = 0;
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let mut cols = line.split('\t');
                let (official, diffusers) = (cols.next().unwrap(), cols.next().unwrap());
                let got = match source_of(official, &prefixes) {
                    Some(Source::One(n)) => n,
                    Some(Source::Qkv(p, param)) => {
                        format!("{p}.to_q.{param} | {p}.to_k.{param} | {p}.to_v.{param}")
                    }
                    None => panic!("{file}: no source for {official}"),
                };
                assert_eq!(got, diffusers, "{file}: {official}");
                rows += 1;
            }
            assert_eq!(
                rows,
                AdmUNet::tensor_shapes(&config).unwrap().len(),
                "{file}"
            );
        }
    }
}
