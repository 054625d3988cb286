"""Reference PyTorch code for mapga's MNIST models: the EDM U-Net (the same architecture and
tensor names as `src/models/unet.rs`), EDM training, consistency distillation, the digit
classifier, export to safetensors + RON model cards, and the parity fixtures the Rust tests
compare against."""
