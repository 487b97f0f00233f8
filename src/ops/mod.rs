//! Layers as forward/backward pairs on tensors, written once over `backend` so they run on every
//! device. Each forward returns what its backward needs; each backward sits beside its forward.

pub mod activation;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod reshape;

pub use activation::{relu, relu_backward, Relu};
pub use conv::{conv2d, conv2d_backward, Conv2d, Conv2dGrads};
pub use linear::{linear, linear_backward, LinearGrads};
pub use loss::{softmax_cross_entropy, softmax_cross_entropy_backward, SoftmaxCrossEntropy};
pub use pool::{max_pool2d, max_pool2d_backward, MaxPool2d};
pub use reshape::flatten;
