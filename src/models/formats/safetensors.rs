//! Plain safetensors files: a JSON header of names, dtypes, shapes and byte ranges, then the
//! raw little-endian data. `mapga convert` writes this format (with a card beside it): the
//! fastest one to load.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::FormatError;

/// Every tensor of the safetensors file at `path`, on the CPU, in its stored dtype.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>, FormatError> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        FormatError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    Ok(tensors.into_iter().collect())
}
