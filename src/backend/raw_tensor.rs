//! `RawTensor`: a shape, a dtype and storage on the host (the CPU backend) or in device memory (a
//! GPU or the kernel emulation), untracked by the tape: what the primitives take and return.
//! `RawTensor` (src/tensor.rs) is a raw tensor plus its place on the tape. Raw tensors are values:
//! cloning shares the storage, and mutation (`storage_mut`) copies first if it is shared.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::core::device::Device;
use crate::core::dtype::{DType, Element, HostData};
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::numel;
use crate::cuda::{self, GpuBuffer};

pub(crate) enum Storage {
    Host(HostData),
    Gpu(GpuBuffer),
}

/// Identifies a tensor value (the tape keys gradients by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> TensorId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array on a device. Images are NCHW.
#[derive(Clone)]
pub struct RawTensor {
    id: TensorId,
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
    storage: Arc<Storage>,
}

impl fmt::Debug for RawTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RawTensor({:?}, {:?}, {})",
            self.shape, self.dtype, self.device
        )
    }
}

impl AsRef<RawTensor> for RawTensor {
    fn as_ref(&self) -> &RawTensor {
        self
    }
}

impl RawTensor {
    /// A tensor holding `data` in row-major order.
    pub fn from_vec<T: Element>(
        data: Vec<T>,
        shape: &[usize],
        device: Device,
    ) -> Result<RawTensor> {
        if data.len() != numel(shape) {
            return Err(invalid(
                "tensor data",
                format!(
                    "{} elements do not fill shape {shape:?} ({} elements)",
                    data.len(),
                    numel(shape)
                ),
            ));
        }
        RawTensor::host(T::wrap(data), shape.to_vec(), T::DTYPE).to_device(device)
    }

    pub fn from_slice<T: Element>(
        data: &[T],
        shape: &[usize],
        device: Device,
    ) -> Result<RawTensor> {
        RawTensor::from_vec(data.to_vec(), shape, device)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<RawTensor> {
        let n = numel(shape);
        let data = match dtype {
            DType::F32 => HostData::F32(vec![0.0; n]),
            DType::F64 => HostData::F64(vec![0.0; n]),
            DType::I32 => HostData::I32(vec![0; n]),
            DType::U8 => HostData::U8(vec![0; n]),
            DType::BF16 => HostData::BF16(vec![half::bf16::ZERO; n]),
            DType::F16 => HostData::F16(vec![half::f16::ZERO; n]),
        };
        RawTensor::host(data, shape.to_vec(), dtype).to_device(device)
    }

    /// Standard normal samples scaled by `std` (finite, ≥ 0), reproducible from `seed`.
    pub fn randn(shape: &[usize], std: f32, seed: u64, device: Device) -> Result<RawTensor> {
        if !(std.is_finite() && std >= 0.0) {
            return Err(invalid(
                "standard deviation",
                format!("{std} must be a finite number ≥ 0"),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..numel(shape))
            .map(|_| std * rng.sample::<f32, _>(StandardNormal))
            .collect();
        RawTensor::from_vec(data, shape, device)
    }

    /// Uniform samples in `[low, high)`, reproducible from `seed`.
    pub fn uniform(
        shape: &[usize],
        low: f32,
        high: f32,
        seed: u64,
        device: Device,
    ) -> Result<RawTensor> {
        if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less) {
            return Err(invalid(
                "uniform range",
                format!("low {low} must be below high {high}"),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..numel(shape))
            .map(|_| rng.random_range(low..high))
            .collect();
        RawTensor::from_vec(data, shape, device)
    }

    /// Copies an ndarray into a tensor on `device`.
    pub fn from_ndarray<T: Element>(array: &ArrayD<T>, device: Device) -> Result<RawTensor> {
        let shape = array.shape().to_vec();
        RawTensor::from_vec(array.iter().copied().collect(), &shape, device)
    }

    pub(crate) fn host(data: HostData, shape: Vec<usize>, dtype: DType) -> RawTensor {
        RawTensor {
            id: TensorId::fresh(),
            shape,
            dtype,
            device: Device::Cpu,
            storage: Arc::new(Storage::Host(data)),
        }
    }

    pub(crate) fn from_gpu(buffer: GpuBuffer, shape: Vec<usize>, dtype: DType) -> RawTensor {
        RawTensor {
            id: TensorId::fresh(),
            device: buffer.gpu().device(),
            shape,
            dtype,
            storage: Arc::new(Storage::Gpu(buffer)),
        }
    }

    pub fn id(&self) -> TensorId {
        self.id
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The same data under another shape with as many elements (storage is shared).
    pub fn reshape(&self, shape: &[usize]) -> Result<RawTensor> {
        if numel(shape) != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                expected: self.shape.clone(),
                got: shape.to_vec(),
            });
        }
        Ok(RawTensor {
            id: TensorId::fresh(),
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// A copy on `device` (the same tensor, shared, when it is already there).
    pub fn to_device(&self, device: Device) -> Result<RawTensor> {
        if device == self.device {
            return Ok(self.clone());
        }
        self.copy_to(device)
    }

    fn copy_to(&self, device: Device) -> Result<RawTensor> {
        let host = match &*self.storage {
            Storage::Host(h) => h.clone(),
            Storage::Gpu(_) => self.download_host_data()?,
        };
        match device {
            Device::Cpu => Ok(RawTensor::host(host, self.shape.clone(), self.dtype)),
            _ => {
                if self.dtype == DType::F64 {
                    return Err(Error::Unsupported {
                        op: "to_device",
                        device,
                        why: "device memory holds f32 (f64 is for CPU gradient checks)".into(),
                    });
                }
                let gpu = cuda::gpu(device)?;
                let mut buffer = gpu.alloc(self.numel() * self.dtype.size_in_bytes())?;
                gpu.upload_host_data(&host, &mut buffer)?;
                Ok(RawTensor::from_gpu(buffer, self.shape.clone(), self.dtype))
            }
        }
    }

    fn download_host_data(&self) -> Result<HostData> {
        Ok(match self.dtype {
            DType::F32 => HostData::F32(self.to_vec()?),
            DType::F64 => HostData::F64(self.to_vec()?),
            DType::I32 => HostData::I32(self.to_vec()?),
            DType::U8 => HostData::U8(self.to_vec()?),
            DType::BF16 => HostData::BF16(self.to_vec()?),
            DType::F16 => HostData::F16(self.to_vec()?),
        })
    }

    /// The elements in row-major order, copied to the host.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.expect_dtype("to_vec", T::DTYPE)?;
        match &*self.storage {
            Storage::Host(h) => T::view(h).map(|s| s.to_vec()).ok_or_else(|| {
                Error::Internal(format!(
                    "to_vec: host data does not hold the tensor's dtype {:?}",
                    self.dtype
                ))
            }),
            Storage::Gpu(buffer) => {
                let mut out = vec![T::default(); self.numel()];
                buffer.gpu().download(buffer, &mut out)?;
                Ok(out)
            }
        }
    }

    /// The single element of a one-element tensor, as f64.
    pub fn scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(invalid(
                "scalar",
                format!("tensor of shape {:?} is not one element", self.shape),
            ));
        }
        match self.dtype {
            DType::F32 => Ok(self.to_vec::<f32>()?[0] as f64),
            DType::F64 => Ok(self.to_vec::<f64>()?[0]),
            DType::I32 => Ok(self.to_vec::<i32>()?[0] as f64),
            DType::U8 => Ok(self.to_vec::<u8>()?[0] as f64),
            DType::BF16 => Ok(self.to_vec::<half::bf16>()?[0].to_f64()),
            DType::F16 => Ok(self.to_vec::<half::f16>()?[0].to_f64()),
        }
    }

    /// The elements as an ndarray on the host.
    pub fn to_ndarray<T: Element>(&self) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.to_vec()?)
            .map_err(|e| Error::Internal(format!("ndarray conversion: {e}")))
    }

    /// Converts to `dtype`: f32 ⇄ bf16/f16 on every device, f32 ⇄ f64 on the CPU; the same as
    /// [`crate::backend::cast`].
    pub fn to_dtype(&self, dtype: DType) -> Result<RawTensor> {
        super::cast(self, dtype)
    }

    /// f32 ⇄ f64 on the host (the CPU side of [`crate::backend::cast`]).
    pub(crate) fn host_f32_f64(&self, dtype: DType) -> Result<RawTensor> {
        let data = match (self.host_data("cast")?, dtype) {
            (HostData::F32(v), DType::F64) => HostData::F64(v.iter().map(|&x| x as f64).collect()),
            (HostData::F64(v), DType::F32) => HostData::F32(v.iter().map(|&x| x as f32).collect()),
            _ => {
                return Err(Error::DTypeMismatch {
                    op: "cast between f32 and f64",
                    expected: DType::F32,
                    got: self.dtype,
                })
            }
        };
        Ok(RawTensor::host(data, self.shape.clone(), dtype))
    }

    pub(crate) fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DTypeMismatch {
                op,
                expected: dtype,
                got: self.dtype,
            });
        }
        Ok(())
    }

    pub(crate) fn expect_shape(&self, op: &'static str, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(Error::ShapeMismatch {
                op,
                expected: shape.to_vec(),
                got: self.shape.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn host_data(&self, op: &'static str) -> Result<&HostData> {
        match &*self.storage {
            Storage::Host(h) => Ok(h),
            Storage::Gpu(_) => Err(Error::Unsupported {
                op,
                device: self.device,
                why: "expected host memory".into(),
            }),
        }
    }

    /// The host elements (CPU tensors of dtype T only).
    pub(crate) fn host_slice<T: Element>(&self, op: &'static str) -> Result<&[T]> {
        self.expect_dtype(op, T::DTYPE)?;
        T::view(self.host_data(op)?).ok_or(Error::DTypeMismatch {
            op,
            expected: T::DTYPE,
            got: self.dtype,
        })
    }

    /// The device buffer (tensors on a GPU or the emulation).
    pub(crate) fn gpu_buffer(&self, op: &'static str) -> Result<&GpuBuffer> {
        match &*self.storage {
            Storage::Gpu(b) => Ok(b),
            Storage::Host(_) => Err(Error::Unsupported {
                op,
                device: self.device,
                why: "expected device memory".into(),
            }),
        }
    }

    /// Whether another tensor shares this one's storage (an in-place update would then copy it).
    pub(crate) fn storage_is_shared(&self) -> bool {
        Arc::strong_count(&self.storage) > 1
    }

    /// Gives this tensor storage of its own (a copy, if another tensor shares it).
    pub(crate) fn make_unique(&mut self) -> Result<()> {
        self.storage_mut().map(|_| ())
    }

    /// The device address of this tensor's buffer (0 for host tensors).
    pub(crate) fn device_address(&self) -> u64 {
        match &*self.storage {
            Storage::Gpu(b) => b.address(),
            Storage::Host(_) => 0,
        }
    }

    /// Mutable storage, copied first if another tensor shares it (so tensors keep value semantics).
    pub(crate) fn storage_mut(&mut self) -> Result<&mut Storage> {
        if Arc::get_mut(&mut self.storage).is_none() {
            let copy = match &*self.storage {
                Storage::Host(h) => Storage::Host(h.clone()),
                Storage::Gpu(b) => {
                    let gpu = b.gpu().clone();
                    let mut fresh = gpu.alloc(b.bytes())?;
                    gpu.copy(b, &mut fresh, b.bytes())?;
                    Storage::Gpu(fresh)
                }
            };
            self.storage = Arc::new(copy);
        }
        Arc::get_mut(&mut self.storage)
            .ok_or_else(|| Error::Internal("tensor storage still shared after a copy".into()))
    }

    /// Mutable host elements (CPU tensors of dtype T only).
    pub(crate) fn host_vec_mut<T: Element>(&mut self, op: &'static str) -> Result<&mut Vec<T>> {
        self.expect_dtype(op, T::DTYPE)?;
        let device = self.device;
        match self.storage_mut()? {
            Storage::Host(h) => T::view_mut(h).ok_or_else(|| {
                Error::Internal(format!(
                    "{op}: host data does not hold dtype {:?}",
                    T::DTYPE
                ))
            }),
            Storage::Gpu(_) => Err(Error::Unsupported {
                op,
                device,
                why: "expected host memory".into(),
            }),
        }
    }

    /// The mutable device buffer.
    pub(crate) fn gpu_buffer_mut(&mut self, op: &'static str) -> Result<&mut GpuBuffer> {
        let device = self.device;
        match self.storage_mut()? {
            Storage::Gpu(b) => Ok(b),
            Storage::Host(_) => Err(Error::Unsupported {
                op,
                device,
                why: "expected device memory".into(),
            }),
        }
    }
}
