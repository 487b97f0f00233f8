//! The core tier: element types, the `Device` value, shapes and their formulas, and the error
//! type. It imports nothing else of kiln; every other tier may import it.

pub mod adam;
pub mod device;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod optim;
pub mod shape;
