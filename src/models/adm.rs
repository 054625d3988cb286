//! The ADM U-Net of OpenAI's guided-diffusion and consistency-model releases: the raw network
//! F(x, t, y) behind the consistency models (`cd_*`, `ct_*`), the EDM teachers (`edm_*`) and
//! the ε-prediction ADM models of DPS, DiffPIR, DDRM and RED-diff (`256x256_diffusion_uncond`,
//! `ffhq_10m`). [`super::precond`] turns it into a denoiser or consistency function.
//!
//! One architecture with the settings of [`AdmConfig`] (the official code's names in
//! brackets): `model_channels`, `channel_mult`, `num_res_blocks`, the downsampling rates with
//! self-attention (`attention_resolutions`, as rates), heads (`num_head_channels` or
//! `num_heads`), scale-shift normalisation (`use_scale_shift_norm`), residual up/down blocks
//! (`resblock_updown`) or conv resampling, class conditioning (`num_classes`) and the output
//! channels (6 with `learn_sigma`: ε then the variance interpolation).
//!
//! # Forward pass
//!
//! Input `[B, C, H, W]` (H and W divisible by 2^(levels-1)), one time input per image (or one
//! for all), class labels when class-conditional.
//!
//! 1. `emb = time_embed.2(silu(time_embed.0(features(t))))` with the sinusoidal features
//!    `[cos(t f_0), .., cos(t f_{k-1}), sin(t f_0), .., sin(t f_{k-1})]`, `k = model_channels
//!    / 2`, `f_j = exp(-ln(10000) j / k)`; plus `label_emb[y]` when class-conditional. Every
//!    residual block starts its embedding branch with a SiLU, so `silu(emb)` is computed once.
//! 2. `input_blocks.0` is a 3x3 conv. Then per level `l`: `num_res_blocks` blocks of a residual
//!    block (to `model_channels * channel_mult[l]` channels) and, where the level's rate is an
//!    attention rate, an attention block; between levels a downsampling block: a residual
//!    block with `down` (`resblock_updown`) or a stride-2 3x3 conv `op`. Every input block's
//!    output is pushed on a skip stack.
//! 3. `middle_block`: residual block, attention, residual block.
//! 4. `output_blocks`, levels in reverse: `num_res_blocks + 1` blocks, each on the channel
//!    concatenation `[h, skip]`: a residual block, an attention block at attention rates, and
//!    on the last block of every level but the first an upsampling: a residual block with `up`
//!    or nearest 2x then a 3x3 conv `conv`.
//! 5. `out`: GroupNorm, SiLU, 3x3 conv.
//!
//! Residual block (input `i`, output `o` channels): `h = in_conv(silu(in_norm(x)))`, where
//! `up`/`down` blocks resample (nearest 2x / 2x2 average) between the SiLU and the conv and
//! resample `x` the same way; `e = emb_layers.1(silu(emb))`. With scale-shift `e` is
//! `[scale, shift]` (each `o` wide) and `h = out_conv(silu(out_norm(h) (1 + scale) + shift))`,
//! otherwise `h = out_conv(silu(out_norm(h + e)))`. Output `skip(x) + h`, `skip` a 1x1 conv
//! when `i != o`.
//!
//! Attention block (`C` channels, `H` heads of `d = C / H`): `qkv = qkv_conv(norm(x))` (1x1,
//! `3C`); per head `softmax(q^T k / sqrt(d))` over the pixels weights `v`; the heads'
//! outputs are concatenated (channel `head * d + j`) and `x + proj_out(out)`. The rows of
//! `qkv` are ordered (three, heads, d) in the consistency-model files ("flash" order) and
//! (heads, three, d) in guided-diffusion's ("legacy"); legacy weights are reordered once at
//! load so the forward pass has one layout.
//!
//! GroupNorm: 32 groups (configurable), eps 1e-5. Tensor names are the official `state_dict`
//! names (`input_blocks.1.0.in_layers.2.weight`, ...); [`AdmUNet::tensor_shapes`] lists them.
//!
//! The layers run on [`crate::kernels`]: convs, GroupNorm+SiLU (the scale-shift folded into
//! its affine per image), plain residual blocks as one op, and the attention as one op
//! ([`kernels::attention()`]), each with its own backward pass.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Embedding, Linear, VarBuilder};

use crate::kernels::{self, Conv2d, GroupNorm};

use super::card::HyperValue;
use super::unet::ConfigError;

/// GroupNorm epsilon of every normalisation layer.
const GROUP_NORM_EPS: f64 = 1e-5;

/// How the attention heads are set: by their width or by their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// Heads of this many channels each (`num_head_channels`; 64 in every release).
    Channels(usize),
    /// This many heads at every attention block (`num_heads`, when `num_head_channels` is -1).
    Count(usize),
}

/// The row order of the attention blocks' `qkv` weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvOrder {
    /// (three, heads, d): q is the first `C` rows (consistency-model and EDM-teacher files).
    Flash,
    /// (heads, three, d): each head's q, k, v together (guided-diffusion ADM files).
    Legacy,
}

impl QkvOrder {
    /// The name used in cards: `flash` or `legacy`.
    pub fn name(self) -> &'static str {
        match self {
            QkvOrder::Flash => "flash",
            QkvOrder::Legacy => "legacy",
        }
    }
}

/// The architecture settings of an ADM U-Net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Channels of the first level (`model_channels`).
    pub model_channels: usize,
    /// Output channels: the image channels, or twice them with `learn_sigma`.
    pub out_channels: usize,
    /// Residual blocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Downsampling rates (1, 2, 4, ...) whose blocks have self-attention.
    pub attention_ds: Vec<usize>,
    /// Channel multiplier of each level.
    pub channel_mult: Vec<usize>,
    /// Number of classes of a class-conditional model.
    pub num_classes: Option<usize>,
    /// Attention heads.
    pub heads: Heads,
    /// Whether the embedding scales and shifts the second GroupNorm.
    pub scale_shift: bool,
    /// Residual blocks resample between levels (otherwise strided / upsampling convs).
    pub resblock_updown: bool,
    /// Row order of the stored `qkv` weights.
    pub qkv_order: QkvOrder,
    /// The attention blocks' `qkv` and `proj_out` are stored as 1-D convs (`[O, I, 1]`,
    /// guided-diffusion) instead of 2-D ones (`[O, I, 1, 1]`, the consistency models).
    pub attention_1d: bool,
    /// GroupNorm groups.
    pub groups: usize,
}

fn config_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

fn whole(key: &str, v: &HyperValue, min: u64) -> Result<usize, ConfigError> {
    v.as_u64()
        .filter(|&n| n >= min)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            config_error(
                key,
                format!("{v:?} is not a whole number of at least {min}"),
            )
        })
}

fn flag(key: &str, v: &HyperValue) -> Result<bool, ConfigError> {
    match v {
        HyperValue::Bool(b) => Ok(*b),
        other => Err(config_error(key, format!("{other:?} is not a flag"))),
    }
}

fn list(key: &str, v: &HyperValue) -> Result<Vec<usize>, ConfigError> {
    match v {
        HyperValue::List(items) => items.iter().map(|i| whole(key, i, 1)).collect(),
        other => Err(config_error(
            key,
            format!("{other:?} is not a list of whole numbers"),
        )),
    }
}

/// The hyperparameter keys [`AdmConfig::apply`] understands.
pub const HYPERPARAMETERS: &[&str] = &[
    "model_channels",
    "out_channels",
    "num_res_blocks",
    "attention_ds",
    "channel_mult",
    "num_classes",
    "num_head_channels",
    "num_heads",
    "use_scale_shift_norm",
    "resblock_updown",
    "qkv_order",
    "attention_1d",
    "groups",
    "dropout",
];

impl AdmConfig {
    /// Overrides settings from a card's hyperparameters (official names; see
    /// [`HYPERPARAMETERS`]). Keys this architecture does not know are left to the caller.
    pub fn apply(&mut self, hp: &BTreeMap<String, HyperValue>) -> Result<(), ConfigError> {
        for (key, value) in hp {
            match key.as_str() {
                "model_channels" => self.model_channels = whole(key, value, 1)?,
                "out_channels" => self.out_channels = whole(key, value, 1)?,
                "num_res_blocks" => self.num_res_blocks = whole(key, value, 0)?,
                "attention_ds" => self.attention_ds = list(key, value)?,
                "channel_mult" => self.channel_mult = list(key, value)?,
                "num_classes" => {
                    self.num_classes = match value {
                        HyperValue::Bool(false) => None,
                        v => Some(whole(key, v, 1)?),
                    }
                }
                "num_head_channels" => self.heads = Heads::Channels(whole(key, value, 1)?),
                "num_heads" => self.heads = Heads::Count(whole(key, value, 1)?),
                "use_scale_shift_norm" => self.scale_shift = flag(key, value)?,
                "resblock_updown" => self.resblock_updown = flag(key, value)?,
                "qkv_order" => {
                    self.qkv_order = match value {
                        HyperValue::Text(t) if t == "flash" => QkvOrder::Flash,
                        HyperValue::Text(t) if t == "legacy" => QkvOrder::Legacy,
                        other => {
                            return Err(config_error(
                                key,
                                format!("{other:?} is neither \"flash\" nor \"legacy\""),
                            ))
                        }
                    }
                }
                "attention_1d" => self.attention_1d = flag(key, value)?,
                "groups" => self.groups = whole(key, value, 1)?,
                _ => {}
            }
        }
        self.validate()
    }

    /// The settings as card hyperparameters (what `mapga convert` writes).
    pub fn to_hyperparameters(&self) -> BTreeMap<String, HyperValue> {
        let int = |n: usize| HyperValue::Int(n as i64);
        let ints = |v: &[usize]| HyperValue::List(v.iter().map(|&n| int(n)).collect());
        let mut hp = BTreeMap::from([
            ("model_channels".to_string(), int(self.model_channels)),
            ("out_channels".to_string(), int(self.out_channels)),
            ("num_res_blocks".to_string(), int(self.num_res_blocks)),
            ("attention_ds".to_string(), ints(&self.attention_ds)),
            ("channel_mult".to_string(), ints(&self.channel_mult)),
            (
                "use_scale_shift_norm".to_string(),
                HyperValue::Bool(self.scale_shift),
            ),
            (
                "resblock_updown".to_string(),
                HyperValue::Bool(self.resblock_updown),
            ),
            (
                "qkv_order".to_string(),
                HyperValue::Text(self.qkv_order.name().into()),
            ),
            ("groups".to_string(), int(self.groups)),
            (
                "attention_1d".to_string(),
                HyperValue::Bool(self.attention_1d),
            ),
        ]);
        if let Some(n) = self.num_classes {
            hp.insert("num_classes".into(), int(n));
        }
        match self.heads {
            Heads::Channels(c) => hp.insert("num_head_channels".into(), int(c)),
            Heads::Count(n) => hp.insert("num_heads".into(), int(n)),
        };
        hp
    }

    /// Checks the settings fit together: channel counts divisible by the groups and heads.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.channel_mult.is_empty() {
            return Err(config_error("channel_mult", "needs at least one level"));
        }
        if self.model_channels % 2 != 0 {
            return Err(config_error(
                "model_channels",
                format!("{} must be even", self.model_channels),
            ));
        }
        for l in 0..self.levels() {
            let c = self.level_channels(l);
            if c % self.groups != 0 {
                return Err(config_error(
                    "groups",
                    format!("{} groups do not divide {c} channels", self.groups),
                ));
            }
            if self.attention_ds.contains(&(1 << l)) {
                self.heads_at(c)?;
            }
        }
        Ok(())
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.channel_mult.len()
    }

    fn level_channels(&self, level: usize) -> usize {
        self.model_channels * self.channel_mult[level]
    }

    /// Width of the time embedding (4 x `model_channels`).
    pub fn embedding(&self) -> usize {
        4 * self.model_channels
    }

    /// The number of heads of an attention block over `c` channels.
    fn heads_at(&self, c: usize) -> Result<usize, ConfigError> {
        match self.heads {
            Heads::Channels(d) if c % d == 0 => Ok(c / d),
            Heads::Count(h) if c % h == 0 => Ok(h),
            Heads::Channels(d) => Err(config_error(
                "num_head_channels",
                format!("{d} does not divide the {c} channels of an attention block"),
            )),
            Heads::Count(h) => Err(config_error(
                "num_heads",
                format!("{h} heads do not divide the {c} channels of an attention block"),
            )),
        }
    }

    /// The factor the image height and width must be divisible by.
    pub fn size_multiple(&self) -> usize {
        1 << (self.levels() - 1)
    }
}

/// How a residual block resamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resample {
    None,
    Up,
    Down,
}

/// `x` resampled: nearest 2x or 2x2 average pooling.
fn resample(x: &Tensor, how: Resample) -> candle_core::Result<Tensor> {
    match how {
        Resample::None => Ok(x.clone()),
        Resample::Up => kernels::upsample_nearest2x(x),
        Resample::Down => x.avg_pool2d(2),
    }
}

/// A residual block with its embedding projection.
#[derive(Debug, Clone)]
struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
    /// `out_norm`'s weight and bias, for the scale-shift path.
    out_affine: (Tensor, Tensor),
    groups: usize,
    resample: Resample,
    scale_shift: bool,
}

fn conv(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    Conv2d::load(i, o, k, stride, k / 2, vb)
}

fn norm(config: &AdmConfig, c: usize, vb: VarBuilder) -> candle_core::Result<GroupNorm> {
    GroupNorm::load(config.groups, c, GROUP_NORM_EPS, vb)
}

impl ResBlock {
    fn new(
        i: usize,
        o: usize,
        resample: Resample,
        config: &AdmConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<ResBlock> {
        let emb_out = if config.scale_shift { 2 * o } else { o };
        Ok(ResBlock {
            in_norm: norm(config, i, vb.pp("in_layers.0"))?,
            in_conv: conv(i, o, 3, 1, vb.pp("in_layers.2"))?,
            emb: candle_nn::linear(config.embedding(), emb_out, vb.pp("emb_layers.1"))?,
            out_norm: norm(config, o, vb.pp("out_layers.0"))?,
            out_affine: (
                vb.pp("out_layers.0").get(o, "weight")?,
                vb.pp("out_layers.0").get(o, "bias")?,
            ),
            groups: config.groups,
            out_conv: conv(o, o, 3, 1, vb.pp("out_layers.3"))?,
            skip: if i != o {
                Some(conv(i, o, 1, 1, vb.pp("skip_connection"))?)
            } else {
                None
            },
            resample,
            scale_shift: config.scale_shift,
        })
    }

    /// `silu(out_norm(h) (1 + scale) + shift)` with `[scale, shift] = e` (`[B, 2 o]`), as one
    /// fused GroupNorm+SiLU: per image the affine is `gamma (1 + scale)` and
    /// `beta (1 + scale) + shift`, and the batch runs as one image of `B o` channels in
    /// `B groups` groups (each image's groups are consecutive channels, so the statistics are
    /// the same). `e` depends on the time and label only, so the affine is a constant of the
    /// op; were it tracked, [`kernels::group_norm`] takes the stock differentiable layers.
    fn scale_shift_norm_silu(&self, h: &Tensor, e: &Tensor) -> candle_core::Result<Tensor> {
        let (b, o, height, width) = h.dims4()?;
        let (gamma, beta) = &self.out_affine;
        let scale = (e.narrow(1, 0, o)? + 1.0)?;
        let shift = e.narrow(1, o, o)?;
        let weight = scale.broadcast_mul(&gamma.unsqueeze(0)?)?.flatten_all()?;
        let bias = (scale.broadcast_mul(&beta.unsqueeze(0)?)? + shift)?.flatten_all()?;
        // (A reshape is a node of the autograd graph, whose backward zeroes and adds a
        // gradient the size of the activation: none at batch 1.)
        let flat = if b == 1 {
            h.clone()
        } else {
            h.reshape((1, b * o, height, width))?
        };
        let y = kernels::group_norm(&flat, &weight, &bias, self.groups * b, GROUP_NORM_EPS, true)?;
        if b == 1 {
            Ok(y)
        } else {
            y.reshape((b, o, height, width))
        }
    }

    /// `x`: `[B, i, H, W]`; `emb`: `[B, E]`, already through SiLU.
    fn forward(&self, x: &Tensor, emb: &Tensor) -> candle_core::Result<Tensor> {
        let e = self.emb.forward(emb)?;
        if self.resample == Resample::None && !self.scale_shift {
            // The plain block is the shape `kernels::res_block` runs as one op.
            let (norms, convs) = (
                (&self.in_norm, &self.out_norm),
                (&self.in_conv, &self.out_conv),
            );
            return kernels::res_block(
                x,
                &e,
                norms.0,
                convs.0,
                norms.1,
                convs.1,
                self.skip.as_ref(),
            );
        }
        let h = resample(&self.in_norm.forward_silu(x)?, self.resample)?;
        let x = resample(x, self.resample)?;
        let h = if self.scale_shift {
            self.scale_shift_norm_silu(&self.in_conv.forward(&h)?, &e)?
        } else {
            let h = self.in_conv.forward_with(&h, Some(&e), None)?;
            self.out_norm.forward_silu(&h)?
        };
        let skip = match &self.skip {
            Some(conv) => conv.forward(&x)?,
            None => x,
        };
        self.out_conv.forward_with(&h, None, Some(&skip))
    }
}

/// Multi-head self-attention over the pixels, `qkv` rows in flash order.
#[derive(Debug, Clone)]
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj_out: Conv2d,
    heads: usize,
}

/// The `qkv` conv's rows (weight `[3C, C, 1, 1]` and bias `[3C]`) from (heads, three, d) to
/// (three, heads, d).
fn legacy_to_flash(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let d = rows / (3 * heads);
    let rest: usize = dims[1..].iter().product();
    t.reshape((heads, 3, d, rest))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape(dims)
}

/// An attention block's 1x1 projection from `i` to `o` channels, stored as a 2-D conv or (with
/// `attention_1d`) a 1-D one.
fn pointwise(
    i: usize,
    o: usize,
    config: &AdmConfig,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    if !config.attention_1d {
        return conv(i, o, 1, 1, vb);
    }
    let weight = vb.get((o, i, 1), "weight")?.reshape((o, i, 1, 1))?;
    Ok(Conv2d::new(weight, Some(vb.get(o, "bias")?), 1, 0))
}

impl Attention {
    fn new(c: usize, config: &AdmConfig, vb: VarBuilder) -> candle_core::Result<Attention> {
        let heads = config
            .heads_at(c)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let qkv = pointwise(c, 3 * c, config, vb.pp("qkv"))?;
        let qkv = match config.qkv_order {
            QkvOrder::Flash => qkv,
            QkvOrder::Legacy => Conv2d::new(
                legacy_to_flash(qkv.weight(), heads)?,
                qkv.bias().map(|b| legacy_to_flash(b, heads)).transpose()?,
                1,
                0,
            ),
        };
        Ok(Attention {
            norm: norm(config, c, vb.pp("norm"))?,
            qkv,
            proj_out: pointwise(c, c, config, vb.pp("proj_out"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let out = kernels::attention(&qkv, self.heads)?;
        self.proj_out.forward_with(&out, None, Some(x))
    }
}

/// One layer of an input, middle or output block.
#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Attention(Attention),
    Upsample(Conv2d),
}

impl Layer {
    fn forward(&self, x: &Tensor, emb: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Res(r) => r.forward(x, emb),
            Layer::Attention(a) => a.forward(x),
            Layer::Upsample(c) => c.forward(&kernels::upsample_nearest2x(x)?),
        }
    }
}

/// A sequence of layers (`input_blocks.i`, `middle_block`, `output_blocks.i`).
type Block = Vec<Layer>;

fn run(block: &Block, x: &Tensor, emb: &Tensor) -> candle_core::Result<Tensor> {
    block
        .iter()
        .try_fold(x.clone(), |h, layer| layer.forward(&h, emb))
}

/// A var-builder backend that records the name and shape of every tensor asked for and
/// returns zeros broadcast from a single element (no memory per tensor).
struct ShapeRecorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("the tensor list is unavailable".into()))?
            .insert(name.to_string(), shape.dims().to_vec());
        Tensor::zeros((), dtype, device)?.broadcast_as(shape)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("the shape of tensor `{name}` is not known")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The ADM U-Net F(x, t, y); see the module documentation.
#[derive(Debug, Clone)]
pub struct AdmUNet {
    config: AdmConfig,
    time_embed: (Linear, Linear),
    label_emb: Option<Embedding>,
    input_blocks: Vec<Block>,
    middle_block: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
}

impl AdmUNet {
    /// Builds the network, taking every tensor from `vb` under the official names.
    pub fn new(config: &AdmConfig, vb: VarBuilder) -> candle_core::Result<AdmUNet> {
        config
            .validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (mc, e) = (config.model_channels, config.embedding());
        let time_embed = (
            candle_nn::linear(mc, e, vb.pp("time_embed.0"))?,
            candle_nn::linear(e, e, vb.pp("time_embed.2"))?,
        );
        let label_emb = match config.num_classes {
            Some(n) => Some(candle_nn::embedding(n, e, vb.pp("label_emb"))?),
            None => None,
        };
        let res = |i, o, how, vb| -> candle_core::Result<Layer> {
            Ok(Layer::Res(ResBlock::new(i, o, how, config, vb)?))
        };
        let attention = |c, vb| -> candle_core::Result<Layer> {
            Ok(Layer::Attention(Attention::new(c, config, vb)?))
        };

        let first = config.level_channels(0);
        let vi = vb.pp("input_blocks");
        let mut input_blocks = vec![vec![Layer::Conv(conv(
            config.in_channels,
            first,
            3,
            1,
            vi.pp("0.0"),
        )?)]];
        let mut skips = vec![first];
        let (mut ch, mut ds) = (first, 1);
        for level in 0..config.levels() {
            let out = config.level_channels(level);
            for _ in 0..config.num_res_blocks {
                let vbl = vi.pp(input_blocks.len());
                let mut block = vec![res(ch, out, Resample::None, vbl.pp("0"))?];
                ch = out;
                if config.attention_ds.contains(&ds) {
                    block.push(attention(ch, vbl.pp("1"))?);
                }
                input_blocks.push(block);
                skips.push(ch);
            }
            if level + 1 < config.levels() {
                let vbl = vi.pp(input_blocks.len()).pp("0");
                input_blocks.push(vec![if config.resblock_updown {
                    res(ch, ch, Resample::Down, vbl)?
                } else {
                    Layer::Conv(conv(ch, ch, 3, 2, vbl.pp("op"))?)
                }]);
                skips.push(ch);
                ds *= 2;
            }
        }

        let vm = vb.pp("middle_block");
        let middle_block = vec![
            res(ch, ch, Resample::None, vm.pp("0"))?,
            attention(ch, vm.pp("1"))?,
            res(ch, ch, Resample::None, vm.pp("2"))?,
        ];

        let vo = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for level in (0..config.levels()).rev() {
            let out = config.level_channels(level);
            for i in 0..=config.num_res_blocks {
                let vbl = vo.pp(output_blocks.len());
                let skip = skips.pop().unwrap_or(0);
                let mut block = vec![res(ch + skip, out, Resample::None, vbl.pp("0"))?];
                ch = out;
                if config.attention_ds.contains(&ds) {
                    block.push(attention(ch, vbl.pp("1"))?);
                }
                if level > 0 && i == config.num_res_blocks {
                    let vbu = vbl.pp(block.len());
                    block.push(if config.resblock_updown {
                        res(ch, ch, Resample::Up, vbu)?
                    } else {
                        Layer::Upsample(conv(ch, ch, 3, 1, vbu.pp("conv"))?)
                    });
                    ds /= 2;
                }
                output_blocks.push(block);
            }
        }
        Ok(AdmUNet {
            config: config.clone(),
            time_embed,
            label_emb,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: norm(config, ch, vb.pp("out.0"))?,
            out_conv: conv(first, config.out_channels, 3, 1, vb.pp("out.2"))?,
        })
    }

    /// Every tensor the configuration needs, by official name, with its shape.
    ///
    /// The network is built on a var builder that records each name and shape and hands out
    /// zeros broadcast from one element: no weight memory is allocated or initialised (with
    /// a `VarMap` the ImageNet-64 model's 296 M random initial values took about 3 s of every
    /// load, which calls this for the checks).
    pub fn tensor_shapes(config: &AdmConfig) -> candle_core::Result<BTreeMap<String, Vec<usize>>> {
        let shapes = Arc::new(Mutex::new(BTreeMap::new()));
        let vb = VarBuilder::from_backend(
            Box::new(ShapeRecorder(shapes.clone())),
            DType::F32,
            Device::Cpu,
        );
        // Legacy reordering needs values; the names and shapes do not depend on it.
        let flash = AdmConfig {
            qkv_order: QkvOrder::Flash,
            ..config.clone()
        };
        AdmUNet::new(&flash, vb)?;
        let data = shapes
            .lock()
            .map_err(|_| candle_core::Error::Msg("the tensor list is unavailable".into()))?;
        Ok(data.clone())
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &AdmConfig {
        &self.config
    }

    /// The sinusoidal features `[n, model_channels]` of the time inputs.
    fn time_features(
        &self,
        times: &[f64],
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let half = self.config.model_channels / 2;
        let freqs: Vec<f64> = (0..half)
            .map(|j| (-(10000f64.ln()) * j as f64 / half as f64).exp())
            .collect();
        let mut features = Vec::with_capacity(times.len() * 2 * half);
        for &t in times {
            features.extend(freqs.iter().map(|f| (t * f).cos()));
            features.extend(freqs.iter().map(|f| (t * f).sin()));
        }
        Tensor::from_vec(features, (times.len(), 2 * half), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    /// F(x, t, y) for a batch `x` `[B, C, H, W]`: `times` holds one time input per image or
    /// one for all; `labels` (`[B]`, integer class indices) is required exactly when the model
    /// is class-conditional. Differentiable in `x`.
    pub fn forward(
        &self,
        x: &Tensor,
        times: &[f64],
        labels: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let m = self.config.size_multiple();
        if c != self.config.in_channels || h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "the network takes images of {} channels whose height and width are multiples \
                 of {m}, not {:?}",
                self.config.in_channels,
                x.dims()
            )
        }
        if times.len() != 1 && times.len() != b {
            candle_core::bail!("{} time inputs for {b} images", times.len())
        }
        let features = self.time_features(times, x.dtype(), x.device())?;
        let emb = self
            .time_embed
            .1
            .forward(&self.time_embed.0.forward(&features)?.silu()?)?;
        let mut emb = emb
            .broadcast_as((b, self.config.embedding()))?
            .contiguous()?;
        match (&self.label_emb, labels) {
            (Some(table), Some(y)) => {
                if y.dims() != [b] {
                    candle_core::bail!("{:?} class labels for {b} images", y.dims())
                }
                let y = y.to_dtype(DType::U32)?.to_device(x.device())?;
                emb = (emb + table.forward(&y)?)?;
            }
            (Some(_), None) => candle_core::bail!("this model is class-conditional: give a label"),
            (None, Some(_)) => candle_core::bail!("this model takes no class label"),
            (None, None) => {}
        }
        let emb = emb.silu()?;

        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.clone();
        for block in &self.input_blocks {
            h = run(block, &h, &emb)?;
            skips.push(h.clone());
        }
        h = run(&self.middle_block, &h, &emb)?;
        for block in &self.output_blocks {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("U-Net skip stack is empty".into()))?;
            h = run(block, &Tensor::cat(&[&h, &skip], 1)?, &emb)?;
        }
        self.out_conv.forward(&self.out_norm.forward_silu(&h)?)
    }

    /// The parameter count.
    pub fn parameter_count(config: &AdmConfig) -> candle_core::Result<usize> {
        Ok(AdmUNet::tensor_shapes(config)?
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum())
    }
}
