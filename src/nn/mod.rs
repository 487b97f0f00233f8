//! Networks built from `ops`. For now one small convnet with a hand-written backward pass; the
//! tape (autograd) replaces the manual chaining when it lands.

mod convnet;
pub mod init;

pub use convnet::{ConvNet, ConvNetConfig};
