//! Networks: the [`Module`] trait, [`Sequential`], layers, initialization, and built-in models.

mod convnet;
pub mod init;
pub mod layers;
pub mod models;
mod module;
mod sequential;

pub use convnet::{ConvNet, ConvNetConfig};
pub use init::Init;
pub use layers::*;
pub use models::{summarize, Architecture, LayerSummary};
pub use module::{Mode, Module};
pub use sequential::Sequential;
