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

/// Sets the CPU backends' thread count (0: every core). Only the first call
/// in a process takes effect, as the pool is global.
pub fn set_threads(threads: usize) {
    if threads > 0 {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
}
