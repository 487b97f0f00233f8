//! Networks: the [`Module`] trait, [`Sequential`], layers, initialization, built-in models, and
//! loading PyTorch `state_dict`s by name.

mod convnet;
pub mod init;
pub mod layers;
pub mod models;
mod module;
mod sequential;
mod state_dict;

pub use convnet::{ConvNet, ConvNetConfig};
pub use init::Init;
pub use layers::*;
pub use models::{summarize, Architecture, LayerSummary};
pub use module::{Mode, Module};
pub use sequential::Sequential;
pub use state_dict::{load_state_dict, load_state_dict_bytes, saved_float_tensor};
