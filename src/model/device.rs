//! Choosing the compute device. In burn 0.22 a `Device` value selects the
//! backend, so this is the only place that names backends.

pub use burn::prelude::Device;

#[cfg(not(all(feature = "ndarray", feature = "wgpu")))]
use crate::Error;
use crate::Result;
use crate::config::{BackendKind, DeviceSpec};

/// The device of a backend, for inference (call `.autodiff()` to train).
/// A backend this build leaves out is a usage error naming the feature.
pub fn device(kind: BackendKind) -> Result<Device> {
    match kind {
        BackendKind::Flex => Ok(Device::flex()),
        BackendKind::Ndarray => ndarray(),
        BackendKind::Wgpu => wgpu(),
    }
}

/// The device a `train.devices` entry names.
pub fn from_spec(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Flex => Ok(Device::flex()),
        DeviceSpec::Ndarray => ndarray(),
        DeviceSpec::Wgpu(None) => wgpu(),
        DeviceSpec::Wgpu(Some(n)) => wgpu_kind(burn::tensor::DeviceKind::DiscreteGpu(n)),
        DeviceSpec::WgpuCpu => wgpu_kind(burn::tensor::DeviceKind::Cpu),
    }
}

#[cfg(feature = "ndarray")]
fn ndarray() -> Result<Device> {
    // Deprecated upstream in favour of flex; the user asked for it by name.
    #[allow(deprecated)]
    Ok(Device::ndarray())
}

#[cfg(not(feature = "ndarray"))]
fn ndarray() -> Result<Device> {
    Err(Error::MissingBackend { backend: "ndarray" })
}

fn wgpu() -> Result<Device> {
    wgpu_kind(burn::tensor::DeviceKind::DefaultDevice)
}

#[cfg(feature = "wgpu")]
fn wgpu_kind(kind: burn::tensor::DeviceKind) -> Result<Device> {
    Ok(Device::wgpu(kind))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_kind(_kind: burn::tensor::DeviceKind) -> Result<Device> {
    Err(Error::MissingBackend { backend: "wgpu" })
}

/// Whether a device computes on the CPU (flex or ndarray), with or without
/// autodiff.
pub fn is_cpu(device: &Device) -> bool {
    let plain = device.clone().without_autodiff();
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if plain == Device::ndarray() {
        return true;
    }
    plain == Device::flex()
}

/// Sets the CPU backends' thread count (0: `RAYON_NUM_THREADS`, else every
/// core) and, with two or more, makes the calling thread one of the pool's
/// threads. Only the first call in a process takes effect, as the pool is
/// global; call it from the thread that will issue the tensor operations and
/// outlives them (the main thread).
///
/// Each CPU tensor operation splits its work over the pool. Issued from a
/// thread outside the pool, every operation is handed over and waited for:
/// two thread wake-ups per operation, about a tenth of training time at
/// batch 1024 on 2 cores (benches/torch-reference.md). From one of the
/// pool's threads the caller does its share and the others steal the rest.
/// A pool of one is left to its own thread: the calling thread would then be
/// the only one to run work handed over from other threads (data-parallel
/// replicas), and it runs such work only while it waits inside the pool.
pub fn set_threads(threads: usize) {
    let threads = match threads {
        0 => std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        n => n,
    };
    let builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    let builder = if threads >= 2 {
        builder.use_current_thread()
    } else {
        builder
    };
    let _ = builder.build_global();
}
