//! Models: what the program knows about a network before and after loading it.
//!
//! A weights file (`models/mnist/denoiser.safetensors`) always has a RON model card beside it
//! (`models/mnist/denoiser.ron`, see [`card`]) giving its kind, architecture, image shape and
//! noise range, so the checker can type a `model` declaration without loading any weights.
//! The networks themselves are one architecture per file, candle style ([`unet`]), loaded
//! and preconditioned by [`network::Network`].

pub mod adm;
pub mod card;
pub mod checkpoint;
pub mod classifier;
pub mod fixture;
pub mod formats;
pub mod network;
pub mod precond;
pub mod unet;

pub use classifier::Classifier;
pub use network::{ModelError, Network};
