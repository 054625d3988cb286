//! The 2-D discrete Fourier transform of image planes as real matrix products, for the exact
//! Gram solves of circular convolutions (a circulant matrix is diagonal in the Fourier basis).
//!
//! With `C[j, k] = cos(2 pi j k / n)` and `S[j, k] = sin(2 pi j k / n)` (both symmetric), the
//! DFT of a real `H x W` plane `x` is `X = (C_H x C_W - S_H x S_W) - i (S_H x C_W + C_H x S_W)`,
//! and the real part of the inverse DFT of `R + i I` is
//! `(C_H R C_W - S_H R S_W - S_H I C_W - C_H I S_W) / (H W)`. Four matrix products each way, on
//! the tensor's device and in its dtype: for the image sizes of this project (28 to 256) that is
//! cheap next to one network evaluation, and it needs nothing beyond candle's matmul.

use candle_core::{DType, Device, Tensor};

use super::error::Result;

/// The cosine and sine matrices of the DFT of `H x W` planes, in one dtype on one device.
#[derive(Debug)]
pub(crate) struct Dft2 {
    cos_h: Tensor,
    sin_h: Tensor,
    cos_w: Tensor,
    sin_w: Tensor,
    h: usize,
    w: usize,
}

/// `(C, S)` of the `n`-point DFT, `[n, n]`, in `dtype` on `device` (computed in f64, with the
/// phase `j k mod n` reduced exactly in integers).
fn cos_sin(n: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let phase = |j: usize, k: usize| 2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
    let cos: Vec<f64> = (0..n * n).map(|i| phase(i / n, i % n).cos()).collect();
    let sin: Vec<f64> = (0..n * n).map(|i| phase(i / n, i % n).sin()).collect();
    let make = |v: Vec<f64>| -> Result<Tensor> {
        Ok(Tensor::from_vec(v, (n, n), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?)
    };
    Ok((make(cos)?, make(sin)?))
}

impl Dft2 {
    /// The DFT of `h x w` planes in `dtype` on `device`.
    pub(crate) fn new(h: usize, w: usize, dtype: DType, device: &Device) -> Result<Self> {
        let (cos_h, sin_h) = cos_sin(h, dtype, device)?;
        let (cos_w, sin_w) = cos_sin(w, dtype, device)?;
        Ok(Self {
            cos_h,
            sin_h,
            cos_w,
            sin_w,
            h,
            w,
        })
    }

    /// `x` (`[..., H, W]`) as a stack of planes `[B, H, W]`.
    fn planes(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.elem_count() / (self.h * self.w).max(1);
        Ok(x.reshape((b, self.h, self.w))?)
    }

    /// The real and imaginary parts of the DFT of every `H x W` plane of `x` (`[..., H, W]`),
    /// each shaped like `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.planes(x)?;
        let cx = self.cos_h.broadcast_matmul(&p)?;
        let sx = self.sin_h.broadcast_matmul(&p)?;
        let re = cx
            .broadcast_matmul(&self.cos_w)?
            .sub(&sx.broadcast_matmul(&self.sin_w)?)?;
        let im = sx
            .broadcast_matmul(&self.cos_w)?
            .add(&cx.broadcast_matmul(&self.sin_w)?)?
            .neg()?;
        Ok((re.reshape(x.dims())?, im.reshape(x.dims())?))
    }

    /// The real part of the inverse DFT of `re + i im` (both `[..., H, W]`).
    pub(crate) fn inverse_real(&self, re: &Tensor, im: &Tensor) -> Result<Tensor> {
        let (r, i) = (self.planes(re)?, self.planes(im)?);
        let left = self
            .cos_h
            .broadcast_matmul(&r)?
            .sub(&self.sin_h.broadcast_matmul(&i)?)?;
        let right = self
            .sin_h
            .broadcast_matmul(&r)?
            .add(&self.cos_h.broadcast_matmul(&i)?)?;
        let out = left
            .broadcast_matmul(&self.cos_w)?
            .sub(&right.broadcast_matmul(&self.sin_w)?)?;
        Ok(out
            .affine(1.0 / (self.h * self.w) as f64, 0.0)?
            .reshape(re.dims())?)
    }

    /// `x` filtered by the real, even spectrum `g` (`[H, W]`, `g[k, l] = g[-k, -l]`): the
    /// inverse DFT of `g * DFT(x)` for every plane, real because `g` is even.
    pub(crate) fn filter(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (re, im) = self.forward(x)?;
        self.inverse_real(&re.broadcast_mul(g)?, &im.broadcast_mul(g)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn plane(h: usize, w: usize) -> Vec<f64> {
        (0..h * w)
            .map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0)
            .collect()
    }

    #[test]
    fn forward_matches_the_definition_and_inverse_undoes_it() {
        let (h, w) = (5, 6);
        let x = plane(h, w);
        let t = ok(Tensor::from_vec(x.clone(), (1, h, w), &Device::Cpu).map_err(Into::into));
        let dft = ok(Dft2::new(h, w, DType::F64, &Device::Cpu));
        let (re, im) = ok(dft.forward(&t));
        let re = ok(re
            .flatten_all()
            .and_then(|v| v.to_vec1::<f64>())
            .map_err(Into::into));
        let im = ok(im
            .flatten_all()
            .and_then(|v| v.to_vec1::<f64>())
            .map_err(Into::into));
        for k in 0..h {
            for l in 0..w {
                let (mut sr, mut si) = (0.0, 0.0);
                for j in 0..h {
                    for m in 0..w {
                        let th = 2.0
                            * std::f64::consts::PI
                            * (j as f64 * k as f64 / h as f64 + m as f64 * l as f64 / w as f64);
                        sr += x[j * w + m] * th.cos();
                        si -= x[j * w + m] * th.sin();
                    }
                }
                assert!((re[k * w + l] - sr).abs() < 1e-12, "re[{k},{l}]");
                assert!((im[k * w + l] - si).abs() < 1e-12, "im[{k},{l}]");
            }
        }
        let (re, im) = ok(dft.forward(&t));
        let back = ok(dft.inverse_real(&re, &im));
        let back = ok(back
            .flatten_all()
            .and_then(|v| v.to_vec1::<f64>())
            .map_err(Into::into));
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() < 1e-13);
        }
    }
}
