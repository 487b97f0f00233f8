//! Conv2d: a convolution with its weight [K, C/groups, KH, KW] and optional bias [K].

use crate::core::device::Device;
use crate::core::error::{invalid, Result};
use crate::core::shape::Window2d;
use crate::nn::init::Init;
use crate::nn::module::{weight_and_bias, weight_and_bias_mut, Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub window: Window2d,
}

impl Conv2d {
    /// A square `k`x`k` convolution from `in_channels` to `out_channels` with a bias, drawn by
    /// `init` from `seed` (fans: C·k·k in, K·k·k out; see [`Init::bias`] for the bias).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        k: usize,
        stride: usize,
        padding: usize,
        init: Init,
        seed: u64,
        device: Device,
    ) -> Result<Conv2d> {
        let shape = [out_channels, in_channels, k, k];
        let (weight, bias) = init_parameters(
            "conv2d layer",
            shape,
            out_channels,
            in_channels * k * k,
            out_channels * k * k,
            init,
            seed,
            device,
        )?;
        Ok(Conv2d {
            weight,
            bias: Some(bias),
            window: Window2d::square(k, stride, padding),
        })
    }

    /// The same layer with output sizes rounded down when the stride does not tile the input
    /// (PyTorch's convention; needed by strided layers on even-sized inputs).
    pub fn floored(mut self) -> Conv2d {
        self.window = self.window.floored();
        self
    }

    /// The same layer without a bias (as before batch norm).
    pub fn without_bias(mut self) -> Conv2d {
        self.bias = None;
        self
    }
}

impl Module for Conv2d {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_ref(), self.window)
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        weight_and_bias_mut(&mut self.weight, self.bias.as_mut())
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        let w = &self.window;
        format!(
            "Conv2d({}→{}, {}x{}, stride {}, padding {})",
            s[1], s[0], s[2], s[3], w.stride.0, w.padding.0
        )
    }
}

/// ConvTranspose2d (the "deconvolution layer"): weight [C_in, C_out, KH, KW] as in PyTorch.
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub window: Window2d,
    pub output_padding: (usize, usize),
}

impl ConvTranspose2d {
    /// A square `k`x`k` transposed convolution with a bias; `output_padding` resolves the output size
    /// when the stride is above 1.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        k: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        init: Init,
        seed: u64,
        device: Device,
    ) -> Result<ConvTranspose2d> {
        // PyTorch's layout [C_in, C_out, k, k]: the fan-in of each output is C_out·k·k.
        let shape = [in_channels, out_channels, k, k];
        let (weight, bias) = init_parameters(
            "conv_transpose2d layer",
            shape,
            out_channels,
            out_channels * k * k,
            in_channels * k * k,
            init,
            seed,
            device,
        )?;
        Ok(ConvTranspose2d {
            weight,
            bias: Some(bias),
            window: Window2d::square(k, stride, padding),
            output_padding: (output_padding, output_padding),
        })
    }
}

impl Module for ConvTranspose2d {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        ops::conv_transpose2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.window,
            self.output_padding,
            1,
        )
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        weight_and_bias_mut(&mut self.weight, self.bias.as_mut())
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        let w = &self.window;
        format!(
            "ConvTranspose2d({}→{}, {}x{}, stride {}, padding {})",
            s[0], s[1], s[2], s[3], w.stride.0, w.padding.0
        )
    }
}

/// A conv layer's weight of `shape` and its bias of `outputs` values (the output channels), as
/// gradient leaves.
#[allow(clippy::too_many_arguments)]
fn init_parameters(
    what: &'static str,
    shape: [usize; 4],
    outputs: usize,
    fan_in: usize,
    fan_out: usize,
    init: Init,
    seed: u64,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    if shape.contains(&0) {
        return Err(invalid(what, "channels and kernel size must be positive"));
    }
    let weight = init.weight(&shape, fan_in, fan_out, seed, device)?;
    let bias = init.bias(outputs, fan_in, seed, device)?;
    Ok((weight.with_grad(), bias.with_grad()))
}
