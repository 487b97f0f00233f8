//! Operations on tensors, written once over `backend` so they run on every device. Each records
//! itself on the tape (see `autograd`) with its backward rule right beside its forward.

pub mod activation;
pub mod cast;
pub mod conv;
pub mod conv_transpose;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod regularization;
pub mod reshape;
pub mod shape;

pub use activation::*;
pub use cast::*;
pub use conv::*;
#[allow(unused_imports)]
pub use conv_transpose::*;
#[allow(unused_imports)]
pub use dropout::*;
pub use elementwise::*;
pub use linear::*;
pub use loss::*;
#[allow(unused_imports)]
pub use norm::*;
pub use pool::*;
#[allow(unused_imports)]
pub use regularization::*;
pub use reshape::*;
#[allow(unused_imports)]
pub use shape::*;
