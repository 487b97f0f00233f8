//! Operations on tensors, written once over `backend` so they run on every device. Each records
//! itself on the tape (see `autograd`) with its backward rule right beside its forward.

pub mod activation;
pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod reshape;

pub use activation::relu;
pub use conv::conv2d;
pub use elementwise::{add, mean, mul, scale, sum};
pub use linear::linear;
pub use loss::softmax_cross_entropy;
pub use pool::max_pool2d;
pub use reshape::flatten;
