//! Element types: the `DType` tag, the Rust types that can be elements, and host data of any of
//! them. Nothing here knows about devices or tensors.

use std::fmt;

/// Element types. The CPU computes in f32 and f64 (f64 for gradient checks); device memory holds
/// f32, and i32/u8 for indices, labels and masks. BF16 and F16 are storage formats of the
/// mixed-precision path: tensors are cast to them (`ops::cast`) for the tensor-core GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    F32,
    F64,
    I32,
    U8,
    BF16,
    F16,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
            DType::U8 => 1,
            DType::BF16 | DType::F16 => 2,
        }
    }
}

/// Host data of one of the supported element types.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum HostData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    BF16(Vec<half::bf16>),
    F16(Vec<half::f16>),
}

/// A Rust type that can be a tensor element.
pub trait Element: Copy + Default + Send + Sync + fmt::Debug + 'static {
    const DTYPE: DType;
    #[doc(hidden)]
    fn wrap(data: Vec<Self>) -> HostData;
    #[doc(hidden)]
    fn view(data: &HostData) -> Option<&[Self]>;
    #[doc(hidden)]
    fn view_mut(data: &mut HostData) -> Option<&mut Vec<Self>>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(data: Vec<Self>) -> HostData {
                HostData::$variant(data)
            }
            fn view(data: &HostData) -> Option<&[Self]> {
                match data {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn view_mut(data: &mut HostData) -> Option<&mut Vec<Self>> {
                match data {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(i32, I32);
element!(u8, U8);
element!(half::bf16, BF16);
element!(half::f16, F16);
