//! The EDM U-Net: the raw network F(x, c_noise) that [`super::network::Network`] wraps with
//! EDM or consistency-model preconditioning.
//!
//! One architecture, configured by the model card's `hyperparameters` ([`UNetConfig`]):
//!
//! | key              | meaning                                               | default     |
//! |------------------|-------------------------------------------------------|-------------|
//! | `channels`       | channels of the first level                           | 32          |
//! | `channel_mult`   | channel multiplier of each level (one level each)     | `[1, 2, 4]` |
//! | `num_res_blocks` | residual blocks per level in the encoder              | 2           |
//! | `attention`      | one self-attention block in the middle (lowest level) | `false`     |
//! | `groups`         | GroupNorm groups (must divide every channel count)    | 8           |
//! | `embedding`      | width of the noise embedding                          | 4 x channels|
//! | `dropout`        | training only; accepted and ignored                   | —           |
//!
//! Any other key is an error, so a typo is never silently ignored.
//!
//! # Forward pass
//!
//! Input `[B, C, H, W]`, `c_noise` one number (EDM: ln(sigma) / 4).
//!
//! 1. Noise embedding: sinusoidal features of `c_noise` of width `channels`,
//!    `[cos(c_noise f_0), .., cos(c_noise f_{k-1}), sin(c_noise f_0), .., sin(c_noise f_{k-1})]`
//!    with `k = channels / 2` and `f_j = (1/10000)^(j/k)` (EDM's `PositionalEmbedding` with
//!    `endpoint=False`), then `emb = emb.linear_2(silu(emb.linear_1(features)))`.
//! 2. `conv_in` (3x3). The encoder pushes every activation it makes (after `conv_in`, after
//!    each residual block, after each downsampling) on a skip stack.
//! 3. Encoder level `l` (channels `channels * channel_mult[l]`): `num_res_blocks` residual
//!    blocks, then, except at the last level, a stride-2 3x3 conv (padding 1; an odd size
//!    n becomes (n + 1) / 2, as in PyTorch).
//! 4. Middle: residual block, self-attention (if `attention`), residual block.
//! 5. Decoder level `l` from the last to the first: `num_res_blocks + 1` residual blocks, each
//!    on the channel concatenation `[h, skip]` of the current activation and the popped skip;
//!    then, except at level 0, nearest 2x upsampling (cropped to the size of the next skip when
//!    that is odd) and a 3x3 conv.
//! 6. Output: GroupNorm, SiLU, `conv_out` (3x3, back to `C` channels).
//!
//! A residual block with input channels `i`, output `o`: `h = conv1(silu(norm1(x)))`,
//! `h = h + emb_proj(silu(emb))` (broadcast over the pixels), `h = conv2(silu(norm2(h)))`,
//! output `skip(x) + h` where `skip` is a 1x1 conv when `i != o` and the identity otherwise.
//!
//! Self-attention (one head): `n = norm(x)`, `q, k, v` = the three `C`-channel thirds of
//! `qkv(n)` (1x1 conv to `3C` channels, in that order), weights
//! `softmax(q^T k / sqrt(C))` over the pixels, output `x + proj(v weighted)` (1x1 conv).
//!
//! GroupNorm epsilon is 1e-5 everywhere; every conv and linear layer has a bias.
//!
//! The convs, the GroupNorms (fused with the SiLU that follows them), the upsamplings and each
//! residual block after its embedding projection (one op, [`kernels::res_block`]) run on
//! [`crate::kernels`]: fast CPU custom ops that treat the weights as constants and
//! differentiate with respect to the input only (the network is never trained in Rust).
//!
//! # Tensor names
//!
//! The names are PyTorch `state_dict` style (a PyTorch reference must use exactly these).
//! `<rb>` is a residual block, `<attn>` an attention block, `<conv>` a conv, `<lin>` a linear
//! layer and `<norm>` a GroupNorm:
//!
//! ```text
//! <conv> / <lin>  = .weight ([out, in, k, k] / [out, in]), .bias ([out])
//! <norm>          = .weight ([c]), .bias ([c])
//! <rb>            = .norm1 <norm>, .conv1 <conv>, .emb_proj <lin>, .norm2 <norm>,
//!                   .conv2 <conv>, .skip <conv> (1x1, only when channels change)
//! <attn>          = .norm <norm>, .qkv <conv> (1x1, 3C), .proj <conv> (1x1)
//!
//! emb.linear_1, emb.linear_2                 <lin>
//! conv_in                                    <conv>
//! down.{l}.res.{i}                           <rb>, i < num_res_blocks
//! down.{l}.downsample.conv                   <conv>, l < levels - 1
//! mid.res.0, mid.res.1                       <rb>
//! mid.attn                                   <attn>, only with `attention`
//! up.{l}.res.{i}                             <rb>, i < num_res_blocks + 1
//! up.{l}.upsample.conv                       <conv>, l > 0
//! norm_out                                   <norm>
//! conv_out                                   <conv>
//! ```
//!
//! [`UNet::tensor_shapes`] lists every name with its shape for a configuration.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder, VarMap};

use crate::kernels::{self, Conv2d, GroupNorm};

use super::card::HyperValue;

/// GroupNorm epsilon of every normalisation layer.
const GROUP_NORM_EPS: f64 = 1e-5;

/// The U-Net's architecture settings, read from a model card's `hyperparameters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UNetConfig {
    /// Image channels (input and output), from the card's `image_shape`.
    pub in_channels: usize,
    /// Channels of the first level.
    pub channels: usize,
    /// Channel multiplier of each level.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Whether the middle has a self-attention block.
    pub attention: bool,
    /// GroupNorm groups.
    pub groups: usize,
    /// Width of the noise embedding.
    pub embedding: usize,
}

/// A U-Net configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("U-Net hyperparameter `{key}`: {message}")]
pub struct ConfigError {
    /// The hyperparameter at fault.
    pub key: String,
    /// What is wrong, in plain words.
    pub message: String,
}

fn config_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// A whole number of at least 1 from a hyperparameter.
fn positive(key: &str, v: &HyperValue) -> Result<usize, ConfigError> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| config_error(key, format!("{v:?} is not a whole number of at least 1")))
}

impl UNetConfig {
    /// The configuration from the card's hyperparameters, for images with `in_channels`
    /// channels; missing keys take the defaults of the module documentation.
    pub fn from_hyperparameters(
        in_channels: usize,
        hp: &BTreeMap<String, HyperValue>,
    ) -> Result<Self, ConfigError> {
        let mut config = UNetConfig {
            in_channels,
            channels: 32,
            channel_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            attention: false,
            groups: 8,
            embedding: 0,
        };
        let mut embedding = None;
        for (key, value) in hp {
            match key.as_str() {
                "channels" => config.channels = positive(key, value)?,
                "num_res_blocks" => {
                    config.num_res_blocks = value
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| config_error(key, "must be a whole number"))?
                }
                "groups" => config.groups = positive(key, value)?,
                "embedding" => embedding = Some(positive(key, value)?),
                "attention" => match value {
                    HyperValue::Bool(b) => config.attention = *b,
                    other => return Err(config_error(key, format!("{other:?} is not a flag"))),
                },
                "channel_mult" => match value {
                    HyperValue::List(items) if !items.is_empty() => {
                        config.channel_mult = items
                            .iter()
                            .map(|v| positive(key, v))
                            .collect::<Result<_, _>>()?
                    }
                    other => {
                        return Err(config_error(
                            key,
                            format!("{other:?} is not a non-empty list of whole numbers"),
                        ))
                    }
                },
                "dropout" => {}
                other => {
                    return Err(config_error(
                        other,
                        "unknown (expected channels, channel_mult, num_res_blocks, attention, \
                         groups, embedding or dropout)",
                    ))
                }
            }
        }
        config.embedding = embedding.unwrap_or(4 * config.channels);
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings fit together: every channel count a multiple of `groups`, an even
    /// `channels` for the sinusoidal features.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.in_channels == 0 {
            return Err(config_error("image_shape", "zero image channels"));
        }
        if self.channels % 2 != 0 {
            return Err(config_error(
                "channels",
                format!("{} must be even", self.channels),
            ));
        }
        for &m in &self.channel_mult {
            let c = self.channels * m;
            if c % self.groups != 0 {
                return Err(config_error(
                    "groups",
                    format!("{} groups do not divide {c} channels", self.groups),
                ));
            }
        }
        Ok(())
    }

    fn level_channels(&self, level: usize) -> usize {
        self.channels * self.channel_mult.get(level).copied().unwrap_or(1)
    }
}

/// A residual block with a noise-embedding projection.
#[derive(Debug, Clone)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

fn conv3x3(i: usize, o: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    Conv2d::load(i, o, 3, stride, 1, vb)
}

fn conv1x1(i: usize, o: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    Conv2d::load(i, o, 1, 1, 0, vb)
}

fn group_norm(groups: usize, channels: usize, vb: VarBuilder) -> candle_core::Result<GroupNorm> {
    GroupNorm::load(groups, channels, GROUP_NORM_EPS, vb)
}

impl ResBlock {
    fn new(
        i: usize,
        o: usize,
        config: &UNetConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<ResBlock> {
        let g = config.groups;
        Ok(ResBlock {
            norm1: group_norm(g, i, vb.pp("norm1"))?,
            conv1: conv3x3(i, o, 1, vb.pp("conv1"))?,
            emb_proj: candle_nn::linear(config.embedding, o, vb.pp("emb_proj"))?,
            norm2: group_norm(g, o, vb.pp("norm2"))?,
            conv2: conv3x3(o, o, 1, vb.pp("conv2"))?,
            skip: if i != o {
                Some(conv1x1(i, o, vb.pp("skip"))?)
            } else {
                None
            },
        })
    }

    /// `x`: `[B, i, H, W]`, `emb`: `[B, E]` (already through SiLU).
    fn forward(&self, x: &Tensor, emb: &Tensor) -> candle_core::Result<Tensor> {
        // The whole block after the embedding's projection is one op (one autograd node).
        let e = self.emb_proj.forward(emb)?;
        let (norms, convs) = ((&self.norm1, &self.norm2), (&self.conv1, &self.conv2));
        kernels::res_block(
            x,
            &e,
            norms.0,
            convs.0,
            norms.1,
            convs.1,
            self.skip.as_ref(),
        )
    }
}

/// Single-head self-attention over the pixels.
#[derive(Debug, Clone)]
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    channels: usize,
}

impl Attention {
    fn new(c: usize, config: &UNetConfig, vb: VarBuilder) -> candle_core::Result<Attention> {
        Ok(Attention {
            norm: group_norm(config.groups, c, vb.pp("norm"))?,
            qkv: conv1x1(c, 3 * c, vb.pp("qkv"))?,
            proj: conv1x1(c, c, vb.pp("proj"))?,
            channels: c,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let qkv = qkv.reshape((b, 3 * c, h * w))?;
        let q = qkv.narrow(1, 0, c)?;
        let k = qkv.narrow(1, c, c)?;
        let v = qkv.narrow(1, 2 * c, c)?;
        // weights[b, i, j] = softmax_j(q_i . k_j / sqrt(C))
        let scale = 1.0 / (self.channels as f64).sqrt();
        let logits = (q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)? * scale)?;
        let weights = candle_nn::ops::softmax(&logits, D::Minus1)?;
        // out[b, c, i] = sum_j v[b, c, j] weights[b, i, j]
        let out = v
            .contiguous()?
            .matmul(&weights.transpose(1, 2)?.contiguous()?)?;
        let out = self.proj.forward(&out.reshape((b, c, h, w))?)?;
        x + out
    }
}

/// `x` with a zero row (column) appended when its height (width) is odd.
///
/// A stride-2 conv with padding 1 gives the same output with or without it (the extra row is
/// where the padding already reads zeros), but candle 0.11's conv backward picks one output
/// padding for both dimensions and fails when the height and width have different parities;
/// with both even it is right. The CPU kernel of [`kernels::conv2d`] needs no padding, but the
/// stock conv it falls back to (other devices) does. Even sizes are not copied.
fn pad_to_even(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = if h % 2 == 1 {
        x.pad_with_zeros(2, 0, 1)?
    } else {
        x.clone()
    };
    if w % 2 == 1 {
        x.pad_with_zeros(3, 0, 1)
    } else {
        Ok(x)
    }
}

/// One decoder level: residual blocks on `[h, skip]`, then an optional upsampling conv.
#[derive(Debug, Clone)]
struct UpLevel {
    res: Vec<ResBlock>,
    upsample: Option<Conv2d>,
}

/// One encoder level: residual blocks, then an optional stride-2 conv.
#[derive(Debug, Clone)]
struct DownLevel {
    res: Vec<ResBlock>,
    downsample: Option<Conv2d>,
}

/// The EDM U-Net F(x, c_noise); see the module documentation for the architecture.
#[derive(Debug, Clone)]
pub struct UNet {
    config: UNetConfig,
    emb_linear_1: Linear,
    emb_linear_2: Linear,
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid_res: [ResBlock; 2],
    mid_attn: Option<Attention>,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the network, taking every tensor from `vb` (names in the module documentation).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> candle_core::Result<UNet> {
        let c0 = config.channels;
        let levels = config.channel_mult.len();
        let emb_linear_1 = candle_nn::linear(c0, config.embedding, vb.pp("emb.linear_1"))?;
        let emb_linear_2 =
            candle_nn::linear(config.embedding, config.embedding, vb.pp("emb.linear_2"))?;
        let conv_in = conv3x3(config.in_channels, c0, 1, vb.pp("conv_in"))?;

        let mut skips = vec![c0];
        let mut cur = c0;
        let mut down = Vec::with_capacity(levels);
        for l in 0..levels {
            let vl = vb.pp(format!("down.{l}"));
            let out = config.level_channels(l);
            let mut res = Vec::with_capacity(config.num_res_blocks);
            for i in 0..config.num_res_blocks {
                res.push(ResBlock::new(cur, out, config, vl.pp(format!("res.{i}")))?);
                cur = out;
                skips.push(cur);
            }
            let downsample = if l + 1 < levels {
                skips.push(cur);
                Some(conv3x3(cur, cur, 2, vl.pp("downsample.conv"))?)
            } else {
                None
            };
            down.push(DownLevel { res, downsample });
        }

        let mid_res = [
            ResBlock::new(cur, cur, config, vb.pp("mid.res.0"))?,
            ResBlock::new(cur, cur, config, vb.pp("mid.res.1"))?,
        ];
        let mid_attn = if config.attention {
            Some(Attention::new(cur, config, vb.pp("mid.attn"))?)
        } else {
            None
        };

        let mut up = Vec::with_capacity(levels);
        for l in (0..levels).rev() {
            let vl = vb.pp(format!("up.{l}"));
            let out = config.level_channels(l);
            let mut res = Vec::with_capacity(config.num_res_blocks + 1);
            for i in 0..=config.num_res_blocks {
                let skip = skips.pop().unwrap_or(0);
                res.push(ResBlock::new(
                    cur + skip,
                    out,
                    config,
                    vl.pp(format!("res.{i}")),
                )?);
                cur = out;
            }
            let upsample = if l > 0 {
                Some(conv3x3(cur, cur, 1, vl.pp("upsample.conv"))?)
            } else {
                None
            };
            up.push(UpLevel { res, upsample });
        }
        let norm_out = group_norm(config.groups, cur, vb.pp("norm_out"))?;
        let conv_out = conv3x3(cur, config.in_channels, 1, vb.pp("conv_out"))?;
        Ok(UNet {
            config: config.clone(),
            emb_linear_1,
            emb_linear_2,
            conv_in,
            down,
            mid_res,
            mid_attn,
            up,
            norm_out,
            conv_out,
        })
    }

    /// Every tensor the configuration needs, by name, with its shape.
    pub fn tensor_shapes(config: &UNetConfig) -> candle_core::Result<BTreeMap<String, Vec<usize>>> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        UNet::new(config, vb)?;
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the tensor list is unavailable".into()))?;
        Ok(data
            .iter()
            .map(|(name, var)| (name.clone(), var.dims().to_vec()))
            .collect())
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The sinusoidal features of `c_noise`, `[1, channels]`, in `dtype` on `device`.
    fn noise_features(
        &self,
        c_noise: f64,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let half = self.config.channels / 2;
        let freqs = (0..half).map(|j| (1.0f64 / 10000.0).powf(j as f64 / half as f64));
        let angles: Vec<f64> = freqs.map(|f| c_noise * f).collect();
        let features: Vec<f64> = angles
            .iter()
            .map(|a| a.cos())
            .chain(angles.iter().map(|a| a.sin()))
            .collect();
        Tensor::from_vec(features, (1, 2 * half), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    /// F(x, c_noise) for a batch `x` of shape `[B, C, H, W]`; differentiable in `x`.
    pub fn forward(&self, x: &Tensor, c_noise: f64) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let features = self.noise_features(c_noise, x.dtype(), x.device())?;
        let emb = self.emb_linear_1.forward(&features)?.silu()?;
        let emb = self.emb_linear_2.forward(&emb)?.silu()?;
        let emb = emb.broadcast_as((b, self.config.embedding))?.contiguous()?;

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for block in &level.res {
                h = block.forward(&h, &emb)?;
                skips.push(h.clone());
            }
            if let Some(conv) = &level.downsample {
                h = conv.forward(&pad_to_even(&h)?)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_res[0].forward(&h, &emb)?;
        if let Some(attn) = &self.mid_attn {
            h = attn.forward(&h)?;
        }
        h = self.mid_res[1].forward(&h, &emb)?;
        for level in &self.up {
            for block in &level.res {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("U-Net skip stack is empty".into()))?;
                h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb)?;
            }
            if let Some(conv) = &level.upsample {
                let (_, _, hh, ww) = h.dims4()?;
                h = kernels::upsample_nearest2x(&h)?;
                // The next skip is the activation before the matching downsampling; crop to it
                // when that had an odd size.
                if let Some(next) = skips.last() {
                    let (_, _, th, tw) = next.dims4()?;
                    if (th, tw) != (2 * hh, 2 * ww) {
                        h = h.narrow(2, 0, th)?.narrow(3, 0, tw)?;
                    }
                }
                h = conv.forward(&h)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(pairs: &[(&str, HyperValue)]) -> BTreeMap<String, HyperValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = UNetConfig::from_hyperparameters(1, &BTreeMap::new()).unwrap();
        assert_eq!(
            c,
            UNetConfig {
                in_channels: 1,
                channels: 32,
                channel_mult: vec![1, 2, 4],
                num_res_blocks: 2,
                attention: false,
                groups: 8,
                embedding: 128,
            }
        );
        let c = UNetConfig::from_hyperparameters(
            3,
            &hp(&[
                ("channels", HyperValue::Int(16)),
                ("dropout", HyperValue::Float(0.1)),
                ("embedding", HyperValue::Int(20)),
            ]),
        )
        .unwrap();
        assert_eq!((c.channels, c.embedding, c.in_channels), (16, 20, 3));
        let err = |pairs: &[(&str, HyperValue)]| {
            UNetConfig::from_hyperparameters(1, &hp(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("channel", HyperValue::Int(8))])
            .starts_with("U-Net hyperparameter `channel`: unknown"));
        assert!(
            err(&[("groups", HyperValue::Int(5))]).contains("5 groups do not divide 32 channels")
        );
        assert!(err(&[("attention", HyperValue::Int(1))]).contains("is not a flag"));
        assert!(err(&[("channel_mult", HyperValue::List(vec![]))]).contains("non-empty list"));
        assert!(err(&[("channels", HyperValue::Int(0))]).contains("at least 1"));
    }

    #[test]
    fn padding_to_even_leaves_the_strided_conv_unchanged() {
        let mut g = crate::random::generator(0, "unet test", 0);
        let x =
            crate::random::normal_tensor(&mut g, &[2, 3, 7, 5], DType::F64, &Device::Cpu).unwrap();
        let k =
            crate::random::normal_tensor(&mut g, &[4, 3, 3, 3], DType::F64, &Device::Cpu).unwrap();
        let plain = x.conv2d(&k, 1, 2, 1, 1).unwrap();
        let padded = pad_to_even(&x).unwrap().conv2d(&k, 1, 2, 1, 1).unwrap();
        assert_eq!(plain.dims(), &[2, 4, 4, 3]);
        assert_eq!(
            plain.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            padded.flatten_all().unwrap().to_vec1::<f64>().unwrap()
        );
    }

    #[test]
    fn tensor_names_follow_the_documented_scheme() {
        let config = UNetConfig {
            in_channels: 1,
            channels: 32,
            channel_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            attention: true,
            groups: 8,
            embedding: 128,
        };
        let shapes = UNet::tensor_shapes(&config).unwrap();
        let get = |name: &str| shapes.get(name).cloned();
        assert_eq!(get("emb.linear_1.weight"), Some(vec![128, 32]));
        assert_eq!(get("emb.linear_2.bias"), Some(vec![128]));
        assert_eq!(get("conv_in.weight"), Some(vec![32, 1, 3, 3]));
        assert_eq!(get("down.0.res.1.conv2.weight"), Some(vec![32, 32, 3, 3]));
        assert_eq!(get("down.0.res.0.skip.weight"), None);
        assert_eq!(get("down.1.res.0.skip.weight"), Some(vec![64, 32, 1, 1]));
        assert_eq!(
            get("down.1.downsample.conv.weight"),
            Some(vec![64, 64, 3, 3])
        );
        assert_eq!(get("down.2.downsample.conv.weight"), None);
        assert_eq!(get("mid.res.0.emb_proj.weight"), Some(vec![128, 128]));
        assert_eq!(get("mid.attn.qkv.weight"), Some(vec![384, 128, 1, 1]));
        assert_eq!(get("mid.attn.proj.bias"), Some(vec![128]));
        // Decoder level 2: [128 + 128] -> 128, then the last one takes the level-1 downsample.
        assert_eq!(get("up.2.res.0.norm1.weight"), Some(vec![256]));
        assert_eq!(get("up.2.res.2.skip.weight"), Some(vec![128, 192, 1, 1]));
        assert_eq!(get("up.2.upsample.conv.weight"), Some(vec![128, 128, 3, 3]));
        assert_eq!(get("up.0.res.2.conv1.weight"), Some(vec![32, 64, 3, 3]));
        assert_eq!(get("up.0.upsample.conv.weight"), None);
        assert_eq!(get("norm_out.weight"), Some(vec![32]));
        assert_eq!(get("conv_out.weight"), Some(vec![1, 32, 3, 3]));
        // The parameter count of the default configuration, which a PyTorch reference must
        // reproduce (the lighter PERF-NOTES probe net has 1.06 M).
        let plain = UNetConfig {
            attention: false,
            ..config
        };
        let count: usize = UNet::tensor_shapes(&plain)
            .unwrap()
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum();
        assert_eq!(count, 3_541_569);
    }
}
