//! Layers: modules holding their parameters, built on `ops`.

mod activation;
mod conv;
mod dropout;
mod linear;
mod norm;
mod pool;
mod reshape;
mod residual;

pub use activation::Activation;
pub use conv::{Conv2d, Conv2dSpec, ConvTranspose2d};
pub use dropout::Dropout;
pub use linear::Linear;
pub use norm::BatchNorm2d;
pub use pool::{Pool, Pool2d};
pub use reshape::Flatten;
pub use residual::ResidualBlock;
