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
    // 16 random bits per element, filled as bytes (the stream's fast path)
    // straight into u16s, little-endian on every platform; the comparison
    // loop below then vectorises, where one over byte pairs did not.
    let mut words = vec![0u16; rows * columns];
    DROPOUT_RNG.with(|rng| {
        rand::Rng::fill_bytes(&mut *rng.borrow_mut(), bytemuck::cast_slice_mut(&mut words))
    });
    let threshold = (module.prob * 65536.0).round() as u16;
    let scale = (1.0 / (1.0 - module.prob)) as f32;
    let mask: Vec<f32> = words
        .iter()
        .map(|&w| {
            if u16::from_le(w) >= threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    x * Tensor::from_data(TensorData::new(mask, [rows, columns]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(prob: f64, seed: u64) -> Vec<f32> {
        let device = crate::model::device::device(crate::config::BackendKind::Flex)
            .unwrap()
            .autodiff();
        let module = burn::nn::DropoutConfig::new(prob).init();
        seed_dropout(seed);
        let ones = Tensor::<2>::ones([500, 64], &device);
        apply(&module, ones)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn masks_drop_at_the_rate_and_rescale_the_rest() {
        let values = mask(0.25, 7);
        let dropped = values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64;
        assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
        assert!(
            values
                .iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        // Seeded: the same seed gives the same mask, another seed another.
        assert_eq!(values, mask(0.25, 7));
        assert_ne!(values, mask(0.25, 8));
        // Two bytes of the stream per element: 32,000 elements, 16,000
        // words past the seed (`mask` seeds first).
        let _ = mask(0.25, 7);
        assert_eq!(dropout_position(), 16_000);
    }
}
