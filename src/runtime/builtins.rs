//! The built-ins of the standard library (`extern fn` in `stdlib/*.mapga`), at run time.
//!
//! Arguments arrive in declared order with defaults filled in by the checker, so each
//! built-in reads them by position. The checker has already checked types, shapes and the
//! values it could know; what is checked here is what only the data can tell.

use std::sync::Arc;

use candle_core::{Tensor, Var};

use super::arith::as_f64;
use super::error::{AtSpan, RunError};
use super::interp::Interp;
use super::value::{NoiseSpec, OptimizerSpec, Value};
use crate::diagnostics::Code;
use crate::diffusion::{self, Model};
use crate::graph::NodeId;
use crate::operators::{self, Operator};
use crate::source::Span;

/// Positional access to a built-in's arguments, with errors at the call's span.
struct Args<'a> {
    name: &'a str,
    span: Span,
    values: Vec<Value>,
}

impl Args<'_> {
    fn get(&self, i: usize) -> Result<&Value, RunError> {
        self.values.get(i).ok_or_else(|| {
            RunError::at(
                self.span,
                format!("internal error: `{}` is missing argument {i}", self.name),
            )
        })
    }

    fn wrong(&self, i: usize, want: &str) -> RunError {
        let found = self.values.get(i).map_or("nothing", Value::kind);
        RunError::at(
            self.span,
            format!(
                "argument {} of `{}` must be {want}, not {found}",
                i + 1,
                self.name
            ),
        )
    }

    fn tensor(&self, i: usize) -> Result<Tensor, RunError> {
        match self.get(i)? {
            Value::Tensor(t) => Ok(t.clone()),
            _ => Err(self.wrong(i, "a Tensor")),
        }
    }

    fn float(&self, i: usize) -> Result<f64, RunError> {
        as_f64(self.get(i)?).ok_or_else(|| self.wrong(i, "a Float"))
    }

    fn int(&self, i: usize) -> Result<i64, RunError> {
        match self.get(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.wrong(i, "an Int")),
        }
    }

    /// A non-negative Int as a size.
    fn size(&self, i: usize) -> Result<usize, RunError> {
        let v = self.int(i)?;
        usize::try_from(v).map_err(|_| {
            RunError::at(
                self.span,
                format!(
                    "argument {} of `{}` must be at least 0, not {v}",
                    i + 1,
                    self.name
                ),
            )
        })
    }

    fn string(&self, i: usize) -> Result<Arc<str>, RunError> {
        match self.get(i)? {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong(i, "a String")),
        }
    }

    fn shape(&self, i: usize) -> Result<Vec<usize>, RunError> {
        match self.get(i)? {
            Value::Shape(s) => Ok(s.clone()),
            _ => Err(self.wrong(i, "a Shape")),
        }
    }

    fn operator(&self, i: usize) -> Result<Operator, RunError> {
        match self.get(i)? {
            Value::Operator(o) => Ok(o.clone()),
            _ => Err(self.wrong(i, "an Operator")),
        }
    }

    fn classifier(&self, i: usize) -> Result<Arc<crate::models::Classifier>, RunError> {
        match self.get(i)? {
            Value::Classifier(c) => Ok(c.clone()),
            _ => Err(self.wrong(i, "a Classifier")),
        }
    }

    fn model(&self, i: usize) -> Result<Model, RunError> {
        match self.get(i)? {
            Value::Model(m) => Ok(m.clone()),
            _ => Err(self.wrong(i, "a Model")),
        }
    }

    fn floats(&self, i: usize) -> Result<Vec<f64>, RunError> {
        match self.get(i)? {
            Value::List(xs) => xs
                .iter()
                .map(|x| as_f64(x).ok_or_else(|| self.wrong(i, "a List of Floats")))
                .collect(),
            _ => Err(self.wrong(i, "a List of Floats")),
        }
    }
}

/// A Float-or-Tensor argument of the elementwise maths functions.
fn elementwise(
    a: &Args,
    i: usize,
    on_float: impl Fn(f64) -> f64,
    on_tensor: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Value, RunError> {
    match a.get(i)? {
        Value::Tensor(t) => Ok(Value::Tensor(on_tensor(t).at(a.span)?)),
        Value::Scalar(t) => Ok(Value::Scalar(on_tensor(t).at(a.span)?)),
        v => match as_f64(v) {
            Some(x) => Ok(Value::Float(on_float(x))),
            None => Err(a.wrong(i, "a Float or a Tensor")),
        },
    }
}

/// A scalar tensor result.
fn scalar(t: candle_core::Result<Tensor>, span: Span) -> Result<Value, RunError> {
    Ok(Value::Scalar(t.at(span)?))
}

/// Runs built-in `name` at node `n` with these argument values.
pub fn call(
    it: &mut Interp,
    n: NodeId,
    name: &str,
    variadic: Option<u32>,
    values: Vec<Value>,
) -> Result<Value, RunError> {
    let prog = it.prog.clone();
    let node = prog.graph.node(n);
    let span = node.span;
    let env = prog.env.clone();
    let (dtype, device) = (env.dtype, env.device.clone());
    let a = Args { name, span, values };
    let op_err = |e: operators::OperatorError| RunError::at(span, e.to_string());
    let file = |i: usize| -> Result<std::path::PathBuf, RunError> {
        let written = a.string(i)?;
        let p = std::path::Path::new(&*written);
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            prog.base_dir(span).join(p)
        };
        prog.permissions
            .check_read(&path)
            .map_err(|d| super::denied(span, &d))?;
        Ok(path)
    };
    let file_err = |e: crate::io::FileError| RunError::new(Code::RunFile, span, e.to_string());
    let mask_op = |r: operators::Result<Tensor>| -> Result<Value, RunError> {
        Ok(Value::Tensor(r.map_err(op_err)?))
    };
    let operator = |r: operators::Result<Operator>| -> Result<Value, RunError> {
        Ok(Value::Operator(r.map_err(op_err)?))
    };
    let rng = |purpose: &str, seed: i64| crate::random::generator(env.seed, purpose, seed);
    Ok(match name {
        // ── tensors ──
        "shape" => Value::Shape(
            (0..a.values.len())
                .map(|i| a.size(i))
                .collect::<Result<_, _>>()?,
        ),
        "zeros" => Value::Tensor(Tensor::zeros(a.shape(0)?, dtype, &device).at(span)?),
        "ones" => Value::Tensor(Tensor::ones(a.shape(0)?, dtype, &device).at(span)?),
        "zeros_like" => Value::Tensor(a.tensor(0)?.zeros_like().at(span)?),
        "ones_like" => Value::Tensor(a.tensor(0)?.ones_like().at(span)?),
        "gaussian_like" => {
            let shape = a.shape(0)?;
            let mut g = rng("gaussian_like", a.int(1)?);
            Value::Tensor(crate::random::normal_tensor(&mut g, &shape, dtype, &device).at(span)?)
        }
        "tensor" => {
            let (values, shape) = (a.floats(0)?, a.shape(1)?);
            let count: usize = shape.iter().product();
            if values.len() != count {
                return Err(RunError::at(
                    span,
                    format!(
                        "{} values cannot fill a tensor of shape {shape:?} ({count} elements)",
                        values.len()
                    ),
                ));
            }
            Value::Tensor(
                Tensor::from_vec(values, shape, &candle_core::Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .and_then(|t| t.to_device(&device))
                    .at(span)?,
            )
        }
        "batch_shape" => {
            let (mut shape, count) = (a.shape(0)?, a.size(1)?);
            if count > 0 {
                shape.insert(0, count);
            }
            Value::Shape(shape)
        }
        "norms" => {
            Value::Tensor(norms(&a.tensor(0)?, &a.shape(1)?).map_err(|e| RunError::at(span, e))?)
        }
        "sum" => scalar(a.tensor(0)?.sum_all(), span)?,
        "mean" => scalar(a.tensor(0)?.mean_all(), span)?,
        "norm" => scalar(norm(&a.tensor(0)?), span)?,
        "dot" => {
            let (x, y) = (a.tensor(0)?, a.tensor(1)?);
            if x.dims() != y.dims() {
                return Err(RunError::at(
                    span,
                    format!(
                        "`dot` needs two tensors of the same shape, not {:?} and {:?}",
                        x.dims(),
                        y.dims()
                    ),
                ));
            }
            scalar((x * y).and_then(|t| t.sum_all()), span)?
        }
        "sqrt" => elementwise(&a, 0, f64::sqrt, Tensor::sqrt)?,
        "exp" => elementwise(&a, 0, f64::exp, Tensor::exp)?,
        "log" => elementwise(&a, 0, f64::ln, Tensor::log)?,
        "abs" => elementwise(&a, 0, f64::abs, Tensor::abs)?,
        "min" | "max" => {
            let is_min = name == "min";
            match (a.get(0)?, a.get(1)?) {
                (Value::Tensor(x), Value::Tensor(y)) => Value::Tensor(
                    if is_min {
                        x.broadcast_minimum(y)
                    } else {
                        x.broadcast_maximum(y)
                    }
                    .at(span)?,
                ),
                (Value::Tensor(x), c) | (c, Value::Tensor(x)) => {
                    let c = as_f64(c).ok_or_else(|| a.wrong(1, "a Float or a Tensor"))?;
                    Value::Tensor(if is_min { x.minimum(c) } else { x.maximum(c) }.at(span)?)
                }
                (x, y) => {
                    let (x, y) = (
                        as_f64(x).ok_or_else(|| a.wrong(0, "a Float or a Tensor"))?,
                        as_f64(y).ok_or_else(|| a.wrong(1, "a Float or a Tensor"))?,
                    );
                    Value::Float(if is_min { x.min(y) } else { x.max(y) })
                }
            }
        }
        "clip" => Value::Tensor(a.tensor(0)?.clamp(a.float(1)?, a.float(2)?).at(span)?),
        "stop_grad" => Value::Tensor(a.tensor(0)?.detach()),
        "grad" => Value::Tensor(it.grad(span, node.inputs[0], node.inputs[1])?),
        "vjp" => Value::Tensor(vjp(it, &a)?),

        // ── diffusion ──
        "log_prior" => {
            let (m, x, eps) = (a.model(0)?, a.tensor(1)?, a.float(2)?);
            m.check_input(&x).map_err(|e| RunError::at(span, e))?;
            positive(span, "eps", eps)?;
            scalar(
                Ok(diffusion::surrogate::log_prior(&m, &x, eps).at(span)?),
                span,
            )?
        }
        "log_likelihood" => {
            let (y, op, x) = (a.tensor(0)?, a.operator(1)?, a.tensor(2)?);
            let (sigma_y, eps) = (a.float(3)?, a.float(4)?);
            Value::Scalar(diffusion::surrogate::log_likelihood(&y, &op, &x, sigma_y, eps).at(span)?)
        }
        "score" => {
            let (m, x, sigma) = (a.model(0)?, a.tensor(1)?, a.float(2)?);
            m.check_input(&x).map_err(|e| RunError::at(span, e))?;
            positive(span, "sigma", sigma)?;
            Value::Tensor(m.score(&x, sigma).at(span)?)
        }
        "renoise" => {
            let (x, from, to, seed) = (a.tensor(0)?, a.float(1)?, a.float(2)?, a.int(3)?);
            if to < from {
                return Err(RunError::at(
                    span,
                    format!("`renoise` can only add noise: `to` ({to}) is below `from` ({from})"),
                ));
            }
            let s = (to * to - from * from).sqrt();
            if s == 0.0 {
                Value::Tensor(x)
            } else {
                let mut g = rng("renoise", seed);
                let noise = crate::random::normal_tensor(&mut g, x.dims(), x.dtype(), x.device())
                    .at(span)?;
                Value::Tensor((x + (noise * s).at(span)?).at(span)?)
            }
        }
        "ddim_step" => {
            let (x, x0) = (a.tensor(0)?, a.tensor(1)?);
            let (sigma, next, eta, seed) = (a.float(2)?, a.float(3)?, a.float(4)?, a.int(5)?);
            positive(span, "sigma", sigma)?;
            let c1 = eta * next * (1.0 - (next * next) / (sigma * sigma)).max(0.0).sqrt();
            let c2 = (next * next - c1 * c1).max(0.0).sqrt();
            let eps_hat = ((&x - &x0).and_then(|t| t / sigma)).at(span)?;
            let mut out = (&x0 + (eps_hat * c2).at(span)?).at(span)?;
            if c1 > 0.0 {
                let mut g = rng("ddim_step", seed);
                let noise = crate::random::normal_tensor(&mut g, x.dims(), x.dtype(), x.device())
                    .at(span)?;
                out = (out + (noise * c1).at(span)?).at(span)?;
            }
            Value::Tensor(out)
        }

        // ── models ──
        "gaussian_prior" => {
            let p = diffusion::GaussianPrior::new(&a.tensor(0)?, &a.tensor(1)?).at(span)?;
            Value::Model(Model::Gaussian(Arc::new(p)))
        }
        "exact_map" | "exact_map_eps" => {
            let m = a.model(0)?;
            let prior = m.as_gaussian().ok_or_else(|| {
                RunError::at(
                    span,
                    format!("`{name}` needs a Gaussian prior, not {}", m.name()),
                )
                .with_help("a Gaussian mixture's MAP has no closed form")
            })?;
            let (op, y, sigma_y) = (a.operator(1)?, a.tensor(2)?, a.float(3)?);
            let eps = if name == "exact_map" {
                0.0
            } else {
                a.float(4)?
            };
            Value::Tensor(
                diffusion::exact::exact_map_eps_batch(prior, &op, &y, sigma_y, eps).at(span)?,
            )
        }
        "gaussian_prior_low_rank" => {
            let p = diffusion::GaussianPrior::low_rank(&a.tensor(0)?, &a.tensor(1)?, &a.tensor(2)?)
                .at(span)?;
            Value::Model(Model::Gaussian(Arc::new(p)))
        }
        "gmm_prior" => {
            let p =
                diffusion::GmmPrior::new(&a.tensor(0)?, &a.tensor(1)?, &a.tensor(2)?).at(span)?;
            Value::Model(Model::Mixture(Arc::new(p)))
        }
        "ode_consistency" => Value::Model(Model::Ode(Arc::new(diffusion::OdeConsistency::new(
            a.model(0)?,
            a.size(1)?,
        )))),
        "denoiser" | "consistency" => {
            let path = file(0)?;
            let kind = if name == "consistency" {
                crate::models::card::ModelKind::Consistency
            } else {
                crate::models::card::ModelKind::Denoiser
            };
            let fail =
                |e: crate::models::ModelError| RunError::new(Code::RunFile, span, e.to_string());
            let mut net =
                crate::models::Network::load_as(&path, Some(kind), dtype, &device).map_err(fail)?;
            let labels = match a.get(1)? {
                Value::Int(-1) => None,
                Value::Int(c) => Some(vec![*c]),
                Value::Tensor(t) => Some(class_labels(t).map_err(|e| RunError::at(span, e))?),
                _ => return Err(a.wrong(1, "an Int or a Tensor of class labels")),
            };
            if let Some(labels) = labels {
                net = net.with_labels(&labels).map_err(fail)?;
            }
            Value::Model(Model::Network(Arc::new(net)))
        }
        "classifier" => {
            let path = file(0)?;
            let clf = crate::models::Classifier::load(&path, dtype, &device)
                .map_err(|e| RunError::new(Code::RunFile, span, e.to_string()))?;
            Value::Classifier(Arc::new(clf))
        }
        "classify"
        | "class_probabilities"
        | "classifier_features"
        | "accuracy"
        | "correct"
        | "confident_share" => {
            let (clf, x) = (a.classifier(0)?, a.tensor(1)?);
            let scores = crate::metrics::classifier::Scores::of(&clf, &x).at(span)?;
            match name {
                "classify" => Value::Tensor(scores.predictions().at(span)?),
                "class_probabilities" => Value::Tensor(scores.probabilities),
                "classifier_features" => Value::Tensor(scores.features),
                "accuracy" => Value::Float(scores.accuracy(&a.tensor(2)?).at(span)?),
                "correct" => {
                    let hits = scores.correct(&a.tensor(2)?).at(span)?;
                    per_item_values(hits, dtype, &device).at(span)?
                }
                _ => Value::Float(scores.confident_share(a.float(2)?).at(span)?),
            }
        }
        "frechet_distance" => Value::Float(
            crate::metrics::classifier::frechet_distance(&a.tensor(0)?, &a.tensor(1)?).at(span)?,
        ),

        // ── noise, optimizers, schedules ──
        "gaussian_noise" => Value::Noise(NoiseSpec::Gaussian {
            sigma: a.float(0)?,
            seed: a.int(1)?,
        }),
        "poisson_noise" => Value::Noise(NoiseSpec::Poisson {
            rate: a.float(0)?,
            seed: a.int(1)?,
        }),
        "sgd" => Value::Optimizer(OptimizerSpec::Sgd { lr: a.float(0)? }),
        "momentum" => Value::Optimizer(OptimizerSpec::Momentum {
            lr: a.float(0)?,
            beta: a.float(1)?,
        }),
        "adam" => {
            let (beta1, beta2) = match a.get(1)? {
                Value::Tuple(b) if b.len() == 2 => (
                    as_f64(&b[0]).ok_or_else(|| a.wrong(1, "two Floats"))?,
                    as_f64(&b[1]).ok_or_else(|| a.wrong(1, "two Floats"))?,
                ),
                _ => return Err(a.wrong(1, "a pair of Floats")),
            };
            Value::Optimizer(OptimizerSpec::Adam {
                lr: a.float(0)?,
                beta1,
                beta2,
                eps: a.float(2)?,
            })
        }
        "karras" | "linear_schedule" | "geometric_schedule" => {
            let (lo, hi, steps) = (a.float(0)?, a.float(1)?, a.size(2)?);
            let s = match name {
                "karras" => diffusion::schedule::karras(lo, hi, steps, a.float(3)?),
                "linear_schedule" => diffusion::schedule::linear(lo, hi, steps),
                _ => diffusion::schedule::geometric(lo, hi, steps),
            };
            diffusion::schedule::validate(&s).map_err(|e| RunError::at(span, e))?;
            Value::Schedule(s.into())
        }
        "schedule" => {
            let s = a.floats(0)?;
            diffusion::schedule::validate(&s).map_err(|e| RunError::at(span, e))?;
            Value::Schedule(s.into())
        }

        // ── operators ──
        "identity" => Value::Operator(operators::identity()),
        "inpaint" => operator(operators::inpaint(&a.tensor(0)?))?,
        "box_mask" => mask_op(operators::box_mask(
            a.size(0)?,
            a.size(1)?,
            a.size(2)?,
            a.size(3)?,
            a.size(4)?,
            a.size(5)?,
            dtype,
            &device,
        ))?,
        "center_box_mask" => mask_op(operators::center_box_mask(
            a.size(0)?,
            a.size(1)?,
            a.float(2)?,
            dtype,
            &device,
        ))?,
        "random_mask" => {
            let mut g = rng("random_mask", a.int(3)?);
            mask_op(operators::random_mask(
                a.size(0)?,
                a.size(1)?,
                a.float(2)?,
                &mut g,
                dtype,
                &device,
            ))?
        }
        "random_boxes_mask" => {
            let mut g = rng("random_boxes_mask", a.int(4)?);
            mask_op(operators::random_boxes_mask(
                a.size(0)?,
                a.size(1)?,
                a.size(2)?,
                a.size(3)?,
                &mut g,
                dtype,
                &device,
            ))?
        }
        "half_mask" => mask_op(operators::half_mask(
            a.size(0)?,
            a.size(1)?,
            &a.string(2)?,
            dtype,
            &device,
        ))?,
        "rows_mask" => mask_op(operators::rows_mask(
            a.size(0)?,
            a.size(1)?,
            a.size(2)?,
            a.size(3)?,
            dtype,
            &device,
        ))?,
        "subsample_mask" => mask_op(operators::subsample_mask(
            a.size(0)?,
            a.size(1)?,
            a.size(2)?,
            dtype,
            &device,
        ))?,
        "gaussian_blur" => operator(operators::gaussian_blur(a.float(0)?, a.size(1)?))?,
        "uniform_blur" => operator(operators::uniform_blur(a.size(0)?))?,
        "motion_blur" => {
            let mut g = rng("motion_blur", a.int(2)?);
            operator(operators::motion_blur(a.size(0)?, a.float(1)?, &mut g))?
        }
        "kernel_blur" => operator(operators::kernel_blur(&a.tensor(0)?))?,
        "downsample" => operator(operators::downsample(a.size(0)?))?,
        "bicubic_downsample" => operator(operators::bicubic_downsample(a.size(0)?))?,
        "to_grey" => Value::Operator(operators::to_grey()),
        "clipping" => operator(operators::clipping(a.float(0)?, a.float(1)?))?,
        "gamma_curve" => operator(operators::gamma_curve(a.float(0)?))?,
        "saturation" => operator(operators::saturation(a.float(0)?))?,
        "operator" => Value::Operator(user_operator(it, &a)?),

        // ── files ──
        "enlarge" => Value::Tensor(
            crate::io::resize::enlarge(&a.tensor(0)?, a.size(1)?)
                .map_err(|e| RunError::at(span, e.to_string()))?,
        ),
        "fit" | "resize" | "center_crop" => {
            let (x, h, w) = (a.tensor(0)?, a.size(1)?, a.size(2)?);
            let out = match name {
                "fit" => crate::io::resize::fit(&x, h, w),
                "resize" => crate::io::resize::resize(&x, h, w),
                _ => crate::io::resize::center_crop(&x, h, w),
            };
            Value::Tensor(out.map_err(|e| RunError::at(span, e.to_string()))?)
        }
        "image" | "mask_image" | "load_npy" => {
            let path = file(0)?;
            let t = match name {
                "image" => crate::io::read_image(&path, dtype, &device),
                "mask_image" => crate::io::read_mask(&path, dtype, &device),
                _ => crate::io::read_npy(&path, dtype, &device),
            }
            .map_err(file_err)?;
            Value::Tensor(as_checked(&prog, n, &path, t)?)
        }
        "load_tensor" => {
            let path = file(0)?;
            let name = a.string(1)?;
            let all =
                candle_core::safetensors::load(&path, &candle_core::Device::Cpu).map_err(|e| {
                    RunError::new(
                        Code::RunFile,
                        span,
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                })?;
            let t = all.get(&*name).ok_or_else(|| {
                RunError::new(
                    Code::RunFile,
                    span,
                    format!(
                        "`{}` has no tensor named `{name}` (the file changed since the check?)",
                        path.display()
                    ),
                )
            })?;
            let t = t
                .to_dtype(dtype)
                .and_then(|t| t.to_device(&device))
                .at(span)?;
            Value::Tensor(as_checked(&prog, n, &path, t)?)
        }
        "density_plot" => {
            let images = (4..a.values.len())
                .map(|i| a.tensor(i))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Tensor(
                density_plot(
                    &a.model(0)?,
                    &a.operator(1)?,
                    &a.tensor(2)?,
                    a.float(3)?,
                    &images,
                    dtype,
                    &device,
                )
                .map_err(|e| RunError::at(span, e))?,
            )
        }
        "as_int64" => Value::Tensor(
            a.tensor(0)?
                .round()
                .and_then(|t| t.to_dtype(candle_core::DType::I64))
                .at(span)?,
        ),
        "captioned_grid" => {
            let captions: Vec<String> = match a.get(0)? {
                Value::List(xs) => xs
                    .iter()
                    .map(|x| match x {
                        Value::Str(s) => Ok(s.to_string()),
                        _ => Err(a.wrong(0, "a List of Strings")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(a.wrong(0, "a List of Strings")),
            };
            let count = variadic.map_or(a.values.len().saturating_sub(2), |v| v as usize);
            let images = (1..1 + count)
                .map(|i| a.tensor(i))
                .collect::<Result<Vec<_>, _>>()?;
            let rows = a.size(1 + count)?;
            Value::Tensor(crate::io::grid::grid_rows(&images, Some(&captions), rows).at(span)?)
        }
        "grid" => {
            let count = variadic.map_or(a.values.len().saturating_sub(1), |v| v as usize);
            let images = (0..count)
                .map(|i| a.tensor(i))
                .collect::<Result<Vec<_>, _>>()?;
            let rows = a.size(count)?;
            Value::Tensor(crate::io::grid::grid_rows(&images, None, rows).at(span)?)
        }

        // ── metrics ──
        "psnr" | "ssim" | "mse" => {
            let (x, r) = (a.tensor(0)?, a.tensor(1)?);
            let metric = match name {
                "psnr" => crate::metrics::psnr,
                "ssim" => crate::metrics::ssim,
                _ => crate::metrics::mse,
            };
            if x.rank() == 4 {
                let each = crate::metrics::per_item(&x, &r, metric).at(span)?;
                per_item_values(each, dtype, &device).at(span)?
            } else {
                Value::Float(metric(&x, &r).at(span)?)
            }
        }
        "data_consistency" => {
            let (y, op, x) = (a.tensor(0)?, a.operator(1)?, a.tensor(2)?);
            let r = op.apply(&x).map_err(op_err)?.broadcast_sub(&y).at(span)?;
            let rms = |r: &Tensor| -> candle_core::Result<f64> {
                let m = r.elem_count().max(1) as f64;
                let ss = crate::diffusion::gaussian::flat_f64(r)?;
                Ok((ss.iter().map(|v| v * v).sum::<f64>() / m).sqrt())
            };
            let batched = matches!(&node.ty, crate::check::types::Type::Tensor(_));
            if batched {
                let n = r.dim(0).at(span)?;
                let each = (0..n)
                    .map(|i| r.get(i).and_then(|ri| rms(&ri)))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .at(span)?;
                per_item_values(each, dtype, &device).at(span)?
            } else {
                Value::Float(rms(&r).at(span)?)
            }
        }
        other => {
            return Err(RunError::at(
                span,
                format!("the built-in `{other}` has no run-time implementation"),
            ))
        }
    })
}

/// sqrt(sum(x^2)) with the gradient x / |x| and 0 at x = 0 (PyTorch's convention), computed
/// as s / sqrt(max(s, tiny)) with s = sum(x^2), so a minimiser of |x - c|^2 does not turn NaN
/// when it reaches c exactly.
fn norm(x: &Tensor) -> candle_core::Result<Tensor> {
    let s = x.sqr()?.sum_all()?;
    let tiny = match x.dtype() {
        candle_core::DType::F64 => f64::MIN_POSITIVE,
        _ => f32::MIN_POSITIVE as f64,
    };
    s.broadcast_div(&s.maximum(tiny)?.sqrt()?)
}

/// One value per item of a batch, as a `[N]` tensor.
fn per_item_values(
    values: Vec<f64>,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> candle_core::Result<Value> {
    let n = values.len();
    Ok(Value::Tensor(
        Tensor::from_vec(values, n, &candle_core::Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?,
    ))
}

/// The norm of each item of shape `item` in `x`: `[N]` for a batch `[N, ...item]`, `[1]` for
/// one item; differentiable, with the gradient 0 at a zero item (as [`norm`]).
fn norms(x: &Tensor, item: &[usize]) -> Result<Tensor, String> {
    let dims = x.dims();
    let n = if dims == item {
        1
    } else if dims.len() == item.len() + 1 && dims[1..] == *item {
        dims[0]
    } else {
        return Err(format!(
            "`norms` needs items of shape {item:?} or a batch of them, not {dims:?}"
        ));
    };
    let per_item = item.iter().product::<usize>();
    let flat = x.reshape((n, per_item)).map_err(|e| e.to_string())?;
    let s = flat
        .sqr()
        .and_then(|t| t.sum(1))
        .map_err(|e| e.to_string())?;
    let tiny = match x.dtype() {
        candle_core::DType::F64 => f64::MIN_POSITIVE,
        _ => f32::MIN_POSITIVE as f64,
    };
    s.maximum(tiny)
        .and_then(|m| m.sqrt())
        .and_then(|r| s.div(&r))
        .map_err(|e| e.to_string())
}

/// A tensor read from `path` at node `n`, checked against the shape the checker read from the
/// file's header: a file that changed between check and run is an error naming it.
fn as_checked(
    prog: &super::interp::Program,
    n: NodeId,
    path: &std::path::Path,
    t: Tensor,
) -> Result<Tensor, RunError> {
    let node = prog.graph.node(n);
    if let crate::check::types::Type::Tensor(s) = &node.ty {
        if let Some(want) = super::interp::known_dims(s) {
            if t.dims() != want.as_slice() {
                return Err(RunError::new(
                    Code::RunFile,
                    node.span,
                    format!(
                        "`{}` holds a {:?} tensor now, but it was {:?} when the pipeline was checked",
                        path.display(),
                        t.dims(),
                        want
                    ),
                )
                .with_help("the file changed after the check: run again"));
            }
        }
    }
    Ok(t)
}

/// The three-panel picture of a 2-D problem (prior, likelihood of y, posterior with the points).
fn density_plot(
    model: &Model,
    op: &Operator,
    y: &Tensor,
    sigma_y: f64,
    points: &[Tensor],
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Tensor, String> {
    use crate::io::plot;
    let shape = model.shape().to_vec();
    let n: usize = shape.iter().product();
    if n != 2 {
        return Err(plot::PlotError::NotTwoD(n).to_string());
    }
    if sigma_y.is_nan() || sigma_y <= 0.0 {
        return Err("`density_plot` needs sigma_y > 0: a noiseless likelihood is a line".into());
    }
    let e = |e: candle_core::Error| e.to_string();
    let pair = |t: &Tensor| -> Result<[f64; 2], String> {
        let v = crate::diffusion::gaussian::flat_f64(t).map_err(e)?;
        match v.as_slice() {
            [a, b] => Ok([*a, *b]),
            _ => Err(format!(
                "a point of the plot must have 2 elements, this one has {:?}",
                t.dims()
            )),
        }
    };
    let pts = points.iter().map(pair).collect::<Result<Vec<_>, _>>()?;
    // The window holds the points and 3 standard deviations around every component's mean.
    let mut extent = pts.clone();
    for g in model.gaussians() {
        let (m, s) = (g.mean(), g.dense_covariance());
        for i in 0..2 {
            let r = 3.0 * s[(i, i)].max(0.0).sqrt();
            let mut lo = [m[0], m[1]];
            let mut hi = lo;
            lo[i] -= r;
            hi[i] += r;
            extent.push(lo);
            extent.push(hi);
        }
    }
    let window = plot::Window::around(&extent);
    let grid = plot::grid_points(window);
    let flat: Vec<f64> = grid.iter().flat_map(|p| [p[0], p[1]]).collect();
    let flat = Tensor::from_vec(flat, (grid.len(), 2), &candle_core::Device::Cpu).map_err(e)?;
    let prior = match model
        .log_density_each(&flat, crate::diffusion::gaussian::SIGMA_MIN)
        .map_err(e)?
    {
        Some(t) => t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(e)?,
        None => return Err("`density_plot` needs an analytic prior".into()),
    };
    let y64 = y
        .to_dtype(candle_core::DType::F64)
        .and_then(|t| t.to_device(&candle_core::Device::Cpu))
        .map_err(e)?;
    let mut likelihood = Vec::with_capacity(grid.len());
    for p in &grid {
        let x = Tensor::from_slice(p, shape.as_slice(), &candle_core::Device::Cpu).map_err(e)?;
        let r = (&y64 - op.apply(&x).map_err(|e| e.to_string())?).map_err(e)?;
        let ss: f64 = crate::diffusion::gaussian::flat_f64(&r)
            .map_err(e)?
            .iter()
            .map(|v| v * v)
            .sum();
        likelihood.push(-0.5 * ss / (sigma_y * sigma_y));
    }
    plot::draw(
        &plot::Fields { prior, likelihood },
        window,
        &pts,
        dtype,
        device,
    )
    .map_err(|e| e.to_string())
}

/// Checks that a noise level is positive.
fn positive(span: Span, what: &str, v: f64) -> Result<(), RunError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(RunError::at(
            span,
            format!("`{what}` must be positive, but it is {v}"),
        ))
    }
}

/// `vjp(f, x, v)`: (df/dx)^T v by one backward pass through `f` at `x`.
fn vjp(it: &mut Interp, a: &Args) -> Result<Tensor, RunError> {
    let span = a.span;
    let (x, v) = (a.tensor(1)?, a.tensor(2)?);
    let var = Var::from_tensor(&x.detach()).at(span)?;
    let out = match a.get(0)? {
        Value::Operator(op) => op
            .apply(var.as_tensor())
            .map_err(|e| RunError::at(span, e.to_string()))?,
        Value::Fn(body) => match it
            .eval_region(*body, vec![Value::Tensor(var.as_tensor().clone())])?
            .pop()
        {
            Some(Value::Tensor(t)) => t,
            other => {
                return Err(RunError::at(
                    span,
                    format!(
                        "`vjp` needs a function that returns a Tensor, this one returned {}",
                        other.as_ref().map_or("nothing", Value::kind)
                    ),
                ))
            }
        },
        _ => return Err(a.wrong(0, "a function or an Operator")),
    };
    if out.dims() != v.dims() {
        return Err(RunError::at(
            span,
            format!(
                "`v` has shape {:?} but f(x) has shape {:?}",
                v.dims(),
                out.dims()
            ),
        ));
    }
    let grads = (out * v.detach())
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .at(span)?;
    match grads.get(var.as_tensor()) {
        Some(g) => Ok(g.detach()),
        None => x.zeros_like().at(span),
    }
}

/// `operator(f, domain)`: the user function runs its region in a fresh interpreter each time
/// the operator is applied (functions capture nothing, so that is all it needs).
fn user_operator(it: &Interp, a: &Args) -> Result<Operator, RunError> {
    let Value::Fn(body) = *a.get(0)? else {
        return Err(a.wrong(0, "a function"));
    };
    let domain = a.shape(1)?;
    let prog = it.prog.clone();
    let name = format!("operator(fn at {})", prog.location(a.span));
    let f: operators::TensorFn = Arc::new(move |x: &Tensor| {
        let mut sub = Interp::new(prog.clone());
        match sub.eval_region(body, vec![Value::Tensor(x.clone())]) {
            Ok(mut out) => match out.pop() {
                Some(Value::Tensor(t)) => Ok(t),
                _ => Err(operators::OperatorError::Callback(
                    "the operator's function did not return a Tensor".into(),
                )),
            },
            Err(e) => Err(operators::OperatorError::Callback(format!(
                "{} (at {})",
                e.message,
                prog.location(e.span)
            ))),
        }
    });
    Ok(operators::user(f, name, &domain))
}

/// Class labels from a tensor `[N]` of whole numbers (as `load_npy` reads them).
fn class_labels(t: &Tensor) -> Result<Vec<i64>, String> {
    if t.rank() != 1 {
        return Err(format!(
            "class labels are a Tensor [N] of one label per image, not {:?}",
            t.dims()
        ));
    }
    let values: Vec<f64> = t
        .to_dtype(candle_core::DType::F64)
        .and_then(|t| t.to_vec1())
        .map_err(|e| e.to_string())?;
    values
        .iter()
        .map(|&v| {
            if v.fract() == 0.0 && v.is_finite() {
                Ok(v as i64)
            } else {
                Err(format!("class label {v} is not a whole number"))
            }
        })
        .collect()
}
