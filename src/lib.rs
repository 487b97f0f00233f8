//! kiln: train convolutional networks on NVIDIA GPUs with hand-written CUDA kernels, with a CPU
//! backend that runs everywhere and is the reference every GPU result is tested against.
//!
//! ```
//! use kiln::{ops, Device, Tensor, Window2d};
//! let device = Device::best(); // a CUDA GPU when one is usable, else the CPU
//! let x = Tensor::randn(&[2, 3, 9, 9], 1.0, 1, device)?;
//! let w = Tensor::randn(&[4, 3, 3, 3], 0.1, 2, device)?.with_grad();
//! let y = ops::conv2d(&x, &w, None, Window2d::square(3, 1, 1))?;
//! assert_eq!(y.shape(), &[2, 4, 9, 9]);
//! let loss = ops::mean(&ops::relu(&y)?)?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().shape(), w.shape());
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod autocast;
pub mod autograd;
pub mod backend;
pub mod core;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod dist;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod selftest;
pub mod tensor;
pub mod testing;
pub mod train;

pub use crate::core::device::Device;
pub use crate::core::dtype::{DType, Element};
pub use crate::core::error::{Error, Result};
pub use crate::core::shape::{ConvGeometry, GemmSpec, Window2d};
/// The core tier's modules under their earlier paths (`kiln::device::Device`, ...).
pub use crate::core::{device, dtype, error, shape};
pub use autocast::{autocast, autocast_activations};
pub use autograd::no_grad;
pub use cuda::{empty_cache, memory_stats, reset_peak_memory, synchronize, MemoryStats};
pub use tensor::Gradients;
pub use tensor::{Tensor, TensorId};
