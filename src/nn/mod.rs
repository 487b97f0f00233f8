//! Networks: the [`Module`] trait, [`Sequential`], layers, initialization, and built-in models.

mod convnet;
pub mod init;
pub mod layers;
mod module;
mod sequential;

pub use convnet::{ConvNet, ConvNetConfig};
pub use init::Init;
pub use layers::*;
pub use module::{Mode, Module};
pub use sequential::Sequential;
