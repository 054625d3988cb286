//! The rearranged weights a conv's fast paths multiply with (Winograd-transformed, or split
//! by kernel row), computed once per layer instead of once per call and image.
//!
//! A MAP-GA run calls every layer thousands of times with the same constant weights, and a
//! residual block run image by image calls its convs once per image: the Winograd weight
//! transform alone was about 5% of a 64x64 batch-16 forward when it ran per call. A
//! [`super::Conv2d`] layer owns one cache and hands it to the ops it builds; an op built by
//! the free functions gets a fresh one, shared by the images of that call and its backward.

use std::any::Any;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::DType;

use super::{flipped_transposed, Geom};
use crate::kernels::Real;

/// Which rearrangement of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// `winograd::transform_weights`.
    Winograd,
    /// `kernel_rows::weight_rows`.
    KernelRows,
}

/// One cached rearrangement: of the weights or of their adjoint, for one dtype.
struct Entry {
    form: Form,
    adjoint: bool,
    dtype: DType,
    data: Arc<dyn Any + Send + Sync>,
}

/// The rearranged forms of one layer's constant weights (see the module documentation).
#[derive(Default)]
pub(super) struct WeightCache {
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for WeightCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map_or(0, |e| e.len());
        f.debug_struct("WeightCache")
            .field("entries", &entries)
            .finish()
    }
}

impl WeightCache {
    /// A fresh, empty cache, to share.
    pub(super) fn new() -> Arc<WeightCache> {
        Arc::new(WeightCache::default())
    }

    /// The number of forms kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

/// The weights one conv call multiplies with: the `[C_out, C_in, k_h, k_w]` weights of the
/// conv `g` as the caller holds them, or, for an input gradient, the flipped and transposed
/// weights of the conv whose adjoint is `g` (built only when a path needs them in that
/// layout), with the layer's cache of rearranged forms.
pub(super) struct ConvWeights<'a, T> {
    source: &'a [T],
    /// The conv whose adjoint this is, when it is one.
    adjoint_of: Option<Geom>,
    cache: &'a WeightCache,
}

impl<'a, T: Real> ConvWeights<'a, T> {
    /// The weights `w` of the conv being run.
    pub(super) fn plain(w: &'a [T], cache: &'a WeightCache) -> Self {
        ConvWeights {
            source: w,
            adjoint_of: None,
            cache,
        }
    }

    /// The weights of the adjoint of the conv `g` whose weights are `w`.
    pub(super) fn adjoint(w: &'a [T], g: Geom, cache: &'a WeightCache) -> Self {
        ConvWeights {
            source: w,
            adjoint_of: Some(g),
            cache,
        }
    }

    /// The weights in the conv's own `[C_out, C_in, k_h, k_w]` layout.
    pub(super) fn data(&self) -> Cow<'a, [T]> {
        match &self.adjoint_of {
            Some(g) => Cow::Owned(flipped_transposed(self.source, g)),
            None => Cow::Borrowed(self.source),
        }
    }

    /// The weights rearranged by `make` into `form`: from the cache, or made now and kept.
    /// `make` runs under the cache's lock (the images of one call wait for one rearrangement
    /// instead of each making its own), so it must not wait on other rayon tasks.
    pub(super) fn get(&self, form: Form, make: impl FnOnce(&[T]) -> Vec<T>) -> Arc<Vec<T>> {
        let adjoint = self.adjoint_of.is_some();
        let key = |e: &Entry| e.form == form && e.adjoint == adjoint && e.dtype == T::DTYPE;
        // A poisoned lock (a panic while making a form) only means a missing entry.
        let mut entries = self.cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = entries.iter().find(|e| key(e)) {
            if let Ok(data) = found.data.clone().downcast::<Vec<T>>() {
                return data;
            }
        }
        let data = Arc::new(make(&self.data()));
        entries.retain(|e| !key(e));
        entries.push(Entry {
            form,
            adjoint,
            dtype: T::DTYPE,
            data: data.clone(),
        });
        data
    }
}
