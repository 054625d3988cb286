//! Recognising an ADM-family checkpoint from its tensor names and shapes, so the releases
//! users hold load without a hand-written card.
//!
//! [`infer_config`] reads the architecture off the `state_dict` (channels, levels, residual
//! blocks per level, where the attention blocks are, scale-shift, class conditioning,
//! resampling blocks); [`identify`] then checks that the configuration expects exactly the
//! file's tensors and names the known release it matches ([`PRESETS`]). What shapes cannot
//! tell comes from the family: OpenAI's consistency-model files (3 output channels) store
//! `qkv` in the (three, heads, d) order and take `250 ln σ` as time input; guided-diffusion's
//! ADM files (learned variance: twice the input channels out) use the (heads, three, d)
//! order and VP ε-prediction on a linear β schedule. Every release uses 64-channel heads; a
//! checkpoint with attention blocks that 64 does not divide needs a card saying
//! `num_head_channels` or `num_heads`.

use std::collections::BTreeMap;

use crate::models::adm::{AdmConfig, AdmUNet, Heads, QkvOrder};

/// Which conventions a checkpoint follows beyond its shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenAI's consistency models and EDM teachers: flash `qkv` order, Karras
    /// preconditioning with time input `250 ln σ`.
    OpenAiKarras,
    /// guided-diffusion ADM: legacy `qkv` order, VP ε-prediction, linear β from 1e-4 to 0.02
    /// over 1000 steps.
    GuidedDiffusionVp,
}

/// A published checkpoint configuration.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// A short name for messages and cards.
    pub name: &'static str,
    /// The released file names that have this layout.
    pub files: &'static [&'static str],
    /// Where the files are published.
    pub source: &'static str,
    /// The training resolution (square).
    pub image_size: usize,
    /// Its conventions.
    pub family: Family,
    /// The architecture.
    pub config: fn() -> AdmConfig,
}

/// The ImageNet-64 consistency models' configuration.
pub(crate) fn cm_imagenet64() -> AdmConfig {
    AdmConfig {
        in_channels: 3,
        model_channels: 192,
        out_channels: 3,
        num_res_blocks: 3,
        attention_ds: vec![2, 4, 8],
        channel_mult: vec![1, 2, 3, 4],
        num_classes: Some(1000),
        heads: Heads::Channels(64),
        scale_shift: true,
        resblock_updown: true,
        qkv_order: QkvOrder::Flash,
        attention_1d: false,
        groups: 32,
    }
}

/// The LSUN-256 consistency models' configuration.
pub(crate) fn cm_lsun256() -> AdmConfig {
    AdmConfig {
        model_channels: 256,
        num_res_blocks: 2,
        attention_ds: vec![8, 16, 32],
        channel_mult: vec![1, 1, 2, 2, 4, 4],
        num_classes: None,
        scale_shift: false,
        ..cm_imagenet64()
    }
}

fn adm256_uncond() -> AdmConfig {
    AdmConfig {
        out_channels: 6,
        scale_shift: true,
        qkv_order: QkvOrder::Legacy,
        attention_1d: true,
        ..cm_lsun256()
    }
}

fn adm256_cond() -> AdmConfig {
    AdmConfig {
        num_classes: Some(1000),
        ..adm256_uncond()
    }
}

fn adm_ffhq256() -> AdmConfig {
    AdmConfig {
        model_channels: 128,
        num_res_blocks: 1,
        attention_ds: vec![16],
        ..adm256_uncond()
    }
}

/// The releases mapga recognises.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "openai-cm-imagenet64",
        files: &[
            "cd_imagenet64_lpips.pt",
            "cd_imagenet64_l2.pt",
            "ct_imagenet64.pt",
            "edm_imagenet64_ema.pt",
        ],
        source: "the openai/consistency_models repository on GitHub (its README links each file)",
        image_size: 64,
        family: Family::OpenAiKarras,
        config: cm_imagenet64,
    },
    Preset {
        name: "openai-cm-lsun256",
        files: &[
            "cd_cat256_lpips.pt",
            "cd_cat256_l2.pt",
            "ct_cat256.pt",
            "edm_cat256_ema.pt",
            "cd_bedroom256_lpips.pt",
            "cd_bedroom256_l2.pt",
            "ct_bedroom256.pt",
            "edm_bedroom256_ema.pt",
        ],
        source: "the openai/consistency_models repository on GitHub (its README links each file)",
        image_size: 256,
        family: Family::OpenAiKarras,
        config: cm_lsun256,
    },
    Preset {
        name: "adm-imagenet256-uncond",
        files: &["256x256_diffusion_uncond.pt"],
        source: "the openai/guided-diffusion repository on GitHub (its README links each file)",
        image_size: 256,
        family: Family::GuidedDiffusionVp,
        config: adm256_uncond,
    },
    Preset {
        name: "adm-imagenet256-cond",
        files: &["256x256_diffusion.pt"],
        source: "the openai/guided-diffusion repository on GitHub (its README links each file)",
        image_size: 256,
        family: Family::GuidedDiffusionVp,
        config: adm256_cond,
    },
    Preset {
        name: "adm-ffhq256",
        files: &["ffhq_10m.pt", "diffusion_ffhq_10m.pt"],
        source: "the DPS (DPS2022/diffusion-posterior-sampling) and DiffPIR repositories on GitHub (their READMEs link it)",
        image_size: 256,
        family: Family::GuidedDiffusionVp,
        config: adm_ffhq256,
    },
];

/// The known release whose file name `path` ends with (`cd_imagenet64_lpips.pt`, or its
/// stem with another extension: a converted `cd_imagenet64_lpips.safetensors`).
pub fn release_named(path: &std::path::Path) -> Option<&'static Preset> {
    let stem = path.file_stem()?.to_str()?;
    PRESETS.iter().find(|p| {
        p.files
            .iter()
            .any(|f| f.strip_suffix(".pt").unwrap_or(f) == stem)
    })
}

/// What [`identify`] found.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The architecture.
    pub config: AdmConfig,
    /// Its conventions.
    pub family: Family,
    /// The known release it matches, if any.
    pub preset: Option<&'static Preset>,
}

/// Why a checkpoint's layout is not one mapga can build.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    /// The tensors do not form an ADM U-Net; the closest preset and where it differs.
    #[error(
        "the tensors do not form an ADM / consistency-model U-Net ({reason}); the closest \
         known layout is `{preset}`, which {mismatch}"
    )]
    Unknown {
        /// What the inference tripped on.
        reason: String,
        /// The closest preset.
        preset: &'static str,
        /// Its first disagreement with the file.
        mismatch: String,
    },
    /// The heads cannot be told from the shapes.
    #[error(
        "an attention block has {channels} channels, which 64-channel heads do not divide: \
         give `num_head_channels` or `num_heads` in a model card"
    )]
    Heads {
        /// The attention block's channels.
        channels: usize,
    },
}

type Shapes = BTreeMap<String, Vec<usize>>;

fn dim(shapes: &Shapes, name: &str, axis: usize) -> Result<usize, String> {
    shapes
        .get(name)
        .and_then(|s| s.get(axis).copied())
        .ok_or_else(|| format!("no tensor `{name}`"))
}

/// How many numbered blocks `prefix.{k}.` there are.
fn block_count(shapes: &Shapes, prefix: &str) -> usize {
    shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|k| k + 1)
        .max()
        .unwrap_or(0)
}

/// Whether output block `k` ends with an upsampling layer (a residual block or a conv after
/// its residual block and optional attention).
fn has_upsampler(shapes: &Shapes, k: usize) -> bool {
    let has = |name: String| shapes.contains_key(&name);
    (1..=2).any(|j| {
        has(format!("output_blocks.{k}.{j}.in_layers.0.weight"))
            || has(format!("output_blocks.{k}.{j}.conv.weight"))
    })
}

/// The architecture a `state_dict` describes, with the family's qkv order and 64-channel
/// heads (to be checked by the caller against the card and [`identify`]).
pub fn infer_config(shapes: &Shapes) -> Result<AdmConfig, String> {
    let mc = dim(shapes, "time_embed.0.weight", 1)?;
    let in_channels = dim(shapes, "input_blocks.0.0.weight", 1)?;
    let out_channels = dim(shapes, "out.2.weight", 0)?;
    let inputs = block_count(shapes, "input_blocks.");
    let outputs = block_count(shapes, "output_blocks.");
    if inputs != outputs || outputs == 0 {
        return Err(format!("{inputs} input blocks but {outputs} output blocks"));
    }
    let num_res_blocks = (0..outputs)
        .find(|&k| has_upsampler(shapes, k))
        .unwrap_or(outputs - 1);
    if outputs % (num_res_blocks + 1) != 0 {
        return Err(format!(
            "{outputs} output blocks do not make levels of {} blocks",
            num_res_blocks + 1
        ));
    }
    let levels = outputs / (num_res_blocks + 1);
    // Each level's channels and attention from its first output block (the encoder has no
    // residual blocks when `num_res_blocks` is 0).
    let mut channel_mult = Vec::with_capacity(levels);
    let mut attention_ds = Vec::new();
    for l in 0..levels {
        let first = (levels - 1 - l) * (num_res_blocks + 1);
        let c = dim(
            shapes,
            &format!("output_blocks.{first}.0.out_layers.3.weight"),
            0,
        )?;
        if c % mc != 0 {
            return Err(format!(
                "level {l} has {c} channels, not a multiple of {mc}"
            ));
        }
        channel_mult.push(c / mc);
        if shapes.contains_key(&format!("output_blocks.{first}.1.qkv.weight")) {
            attention_ds.push(1 << l);
        }
    }
    let resblock_updown = levels == 1
        || !shapes.contains_key(&format!("input_blocks.{}.0.op.weight", num_res_blocks + 1));
    let emb = dim(shapes, "middle_block.0.emb_layers.1.weight", 0)?;
    let middle = dim(shapes, "middle_block.0.out_layers.3.weight", 0)?;
    let learn_sigma = out_channels == 2 * in_channels;
    let attention_1d = shapes
        .iter()
        .find(|(k, _)| k.ends_with(".qkv.weight"))
        .is_some_and(|(_, s)| s.len() == 3);
    Ok(AdmConfig {
        in_channels,
        model_channels: mc,
        out_channels,
        num_res_blocks,
        attention_ds,
        channel_mult,
        num_classes: shapes
            .get("label_emb.weight")
            .and_then(|s| s.first().copied()),
        heads: Heads::Channels(64),
        scale_shift: emb == 2 * middle,
        resblock_updown,
        qkv_order: if learn_sigma {
            QkvOrder::Legacy
        } else {
            QkvOrder::Flash
        },
        attention_1d,
        groups: 32,
    })
}

/// The family a configuration belongs to (see the module documentation).
pub fn family_of(config: &AdmConfig) -> Family {
    if config.out_channels == 2 * config.in_channels {
        Family::GuidedDiffusionVp
    } else {
        Family::OpenAiKarras
    }
}

/// The first difference between the tensors a configuration needs and the file's, in
/// words ("lacks `x`", "has `x` as [..] where the layout needs [..]", "has no `x`").
pub fn first_mismatch(needed: &Shapes, found: &Shapes) -> Option<String> {
    for (name, shape) in needed {
        match found.get(name) {
            None => return Some(format!("needs `{name}` {shape:?}, which the file lacks")),
            Some(s) if s != shape => {
                return Some(format!(
                    "needs `{name}` as {shape:?} but the file has {s:?}"
                ))
            }
            Some(_) => {}
        }
    }
    found
        .keys()
        .find(|k| !needed.contains_key(*k))
        .map(|k| format!("has no tensor `{k}`, which the file has"))
}

/// The configuration of the checkpoint with these tensor shapes, checked to need exactly
/// them, the known release it is (if any), and its family. `heads` overrides the default
/// 64-channel heads (from a card).
pub fn identify(shapes: &Shapes, heads: Option<Heads>) -> Result<Identified, LayoutError> {
    let closest = || {
        let scored = PRESETS.iter().map(|p| {
            let needed = AdmUNet::tensor_shapes(&(p.config)()).unwrap_or_default();
            let shared = needed
                .iter()
                .filter(|(k, s)| shapes.get(*k) == Some(*s))
                .count();
            (shared, p, needed)
        });
        match scored.max_by_key(|(shared, _, _)| *shared) {
            Some((_, preset, needed)) => (
                preset.name,
                first_mismatch(&needed, shapes).unwrap_or_default(),
            ),
            None => ("(none)", String::new()),
        }
    };
    let unknown = |reason: String| {
        let (preset, mismatch) = closest();
        LayoutError::Unknown {
            reason,
            preset,
            mismatch,
        }
    };
    let mut config = infer_config(shapes).map_err(unknown)?;
    if let Some(h) = heads {
        config.heads = h;
    }
    if let Err(e) = config.validate() {
        if heads.is_none() && e.key == "num_head_channels" {
            let channels = (0..config.levels())
                .filter(|l| config.attention_ds.contains(&(1 << l)))
                .map(|l| config.model_channels * config.channel_mult[l])
                .find(|c| c % 64 != 0)
                .unwrap_or(0);
            return Err(LayoutError::Heads { channels });
        }
        return Err(unknown(e.to_string()));
    }
    let needed = AdmUNet::tensor_shapes(&config).map_err(|e| unknown(e.to_string()))?;
    if let Some(m) = first_mismatch(&needed, shapes) {
        return Err(unknown(format!("the inferred layout {m}")));
    }
    let preset = PRESETS.iter().find(|p| {
        let c = (p.config)();
        AdmConfig {
            heads: config.heads,
            ..c
        } == config
    });
    Ok(Identified {
        family: family_of(&config),
        config,
        preset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `name<TAB>(d0, d1, ...)` lines of a committed key list.
    fn key_list(file: &str) -> Shapes {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/adm")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, shape) = l.split_once('\t').unwrap();
                let dims = shape
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .filter(|d| !d.trim().is_empty())
                    .map(|d| d.trim().parse().unwrap())
                    .collect();
                (name.to_string(), dims)
            })
            .collect()
    }

    /// Each preset expects exactly the names and shapes of the real release (lists generated
    /// from the reference implementations), and those shapes identify the preset.
    #[test]
    fn presets_expect_exactly_the_released_tensors() {
        for (file, preset, tensors, params) in [
            (
                "keys_cm_imagenet64.txt",
                "openai-cm-imagenet64",
                541,
                295_899_267,
            ),
            ("keys_cm_lsun256.txt", "openai-cm-lsun256", 566, 526_304_771),
            (
                "keys_adm256_uncond.txt",
                "adm-imagenet256-uncond",
                566,
                552_814_086,
            ),
            ("keys_ffhq_10m.txt", "adm-ffhq256", 362, 93_563_910),
        ] {
            let shapes = key_list(file);
            let p = PRESETS.iter().find(|p| p.name == preset).unwrap();
            let needed = AdmUNet::tensor_shapes(&(p.config)()).unwrap();
            assert_eq!(first_mismatch(&needed, &shapes), None, "{file}");
            assert_eq!(needed.len(), tensors, "{file}");
            assert_eq!(
                AdmUNet::parameter_count(&(p.config)()).unwrap(),
                params,
                "{file}"
            );
            let found = identify(&shapes, None).unwrap();
            assert_eq!(found.preset.map(|p| p.name), Some(preset), "{file}");
            assert_eq!(found.config, (p.config)(), "{file}");
            assert_eq!(found.family, p.family, "{file}");
        }
    }

    #[test]
    fn an_unknown_layout_names_the_closest_preset_and_the_first_mismatch() {
        let mut shapes = key_list("keys_cm_imagenet64.txt");
        shapes.insert("time_embed.2.weight".into(), vec![768, 700]);
        let err = identify(&shapes, None).unwrap_err().to_string();
        assert!(err.contains("`openai-cm-imagenet64`"), "{err}");
        assert!(
            err.contains("needs `time_embed.2.weight` as [768, 768] but the file has [768, 700]"),
            "{err}"
        );
        let mut shapes = key_list("keys_cm_lsun256.txt");
        shapes.remove("input_blocks.0.0.weight");
        let err = identify(&shapes, None).unwrap_err().to_string();
        assert!(err.contains("no tensor `input_blocks.0.0.weight`"), "{err}");
        assert!(err.contains("`openai-cm-lsun256`"), "{err}");
        let mut shapes = key_list("keys_cm_lsun256.txt");
        shapes.insert("extra.weight".into(), vec![3]);
        let err = identify(&shapes, None).unwrap_err().to_string();
        assert!(err.contains("`extra.weight`"), "{err}");
    }
}
