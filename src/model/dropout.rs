//! Dropout masks for training on the CPU, from a seeded stream that a run
//! saves and restores, so training is reproducible and resumable.

use burn::nn::Dropout;
use burn::prelude::*;

thread_local! {
    /// The dropout masks' random stream on the CPU backends; training seeds
    /// it per run ([`seed_dropout`]), so runs stay reproducible. One per
    /// thread, so concurrent runs do not share it.
    static DROPOUT_RNG: std::cell::RefCell<chacha20::ChaCha8Rng> =
        std::cell::RefCell::new(rand::SeedableRng::seed_from_u64(0));
}

/// Seeds this thread's dropout masks (call before training).
pub fn seed_dropout(seed: u64) {
    DROPOUT_RNG.with(|rng| *rng.borrow_mut() = rand::SeedableRng::seed_from_u64(seed));
}

/// Where this thread's dropout stream stands (saved for resuming).
pub fn dropout_position() -> u128 {
    DROPOUT_RNG.with(|rng| rng.borrow().get_word_pos())
}

/// Moves this thread's dropout stream to a saved position (after seeding
/// it with the run's seed).
pub fn set_dropout_position(position: u128) {
    DROPOUT_RNG.with(|rng| rng.borrow_mut().set_word_pos(position));
}

/// Inverted dropout while training. burn's draws each mask element through
/// its generic sampler, which took a quarter of a CPU training step; on
/// the CPU this fills the mask from ChaCha8 in bulk instead (16 bits per
/// element). On a GPU burn's on-device sampling is kept.
pub(super) fn apply(module: &Dropout, x: Tensor<2>) -> Tensor<2> {
    let device = x.device();
    if !module.training.is_enabled() || !device.is_autodiff() || module.prob == 0.0 {
        return x;
    }
    if !super::device::is_cpu(&device) {
        return module.forward(x);
    }
    let [rows, columns] = x.dims();
    let mut bits = vec![0u8; rows * columns * 2];
    DROPOUT_RNG.with(|rng| rand::Rng::fill_bytes(&mut *rng.borrow_mut(), &mut bits));
    let threshold = (module.prob * 65536.0).round() as u16;
    let scale = (1.0 / (1.0 - module.prob)) as f32;
    let mask: Vec<f32> = bits
        .chunks_exact(2)
        .map(|b| {
            if u16::from_le_bytes([b[0], b[1]]) >= threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    x * Tensor::from_data(TensorData::new(mask, [rows, columns]), &device)
}
