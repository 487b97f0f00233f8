//! Layers: modules holding their parameters, built on `ops`.

mod activation;
mod conv;
mod linear;
mod pool;
mod reshape;

pub use activation::Activation;
pub use conv::Conv2d;
pub use linear::Linear;
pub use pool::{Pool, Pool2d};
pub use reshape::Flatten;
