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
    /// Channel groups (1: dense; the input channels: depthwise).
    pub groups: usize,
}

/// A convolution layer's arguments, as PyTorch's `nn.Conv2d` takes them: channels and a square
/// `kernel`x`kernel` window with its stride (default 1), zero padding (default 0) and channel
/// groups (default 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv2dSpec {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv2dSpec {
        Conv2dSpec {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }

    pub fn stride(self, stride: usize) -> Conv2dSpec {
        Conv2dSpec { stride, ..self }
    }

    pub fn padding(self, padding: usize) -> Conv2dSpec {
        Conv2dSpec { padding, ..self }
    }

    /// `groups` channel groups (PyTorch's `groups`): each output channel sees
    /// `in_channels / groups` inputs.
    pub fn groups(self, groups: usize) -> Conv2dSpec {
        Conv2dSpec { groups, ..self }
    }

    fn window(&self) -> Window2d {
        Window2d::square(self.kernel, self.stride, self.padding)
    }
}

impl Conv2d {
    /// The convolution `spec` with a bias, drawn by `init` from `seed` (fans: C/G·k·k in,
    /// K/G·k·k out as PyTorch computes them; see [`Init::bias`] for the bias).
    pub fn new(spec: Conv2dSpec, init: Init, seed: u64, device: Device) -> Result<Conv2d> {
        let Conv2dSpec {
            in_channels: c,
            out_channels: k_out,
            kernel: k,
            groups,
            ..
        } = spec;
        if groups == 0 || c % groups != 0 || k_out % groups != 0 {
            return Err(invalid(
                "conv2d layer",
                format!("{groups} groups must divide the {c} input and {k_out} output channels"),
            ));
        }
        let c_g = c / groups;
        let (weight, bias) = init_parameters(
            "conv2d layer",
            [k_out, c_g, k, k],
            k_out,
            (c_g * k * k, k_out / groups * k * k),
            ParameterDraw { init, seed, device },
        )?;
        Ok(Conv2d {
            weight,
            bias: Some(bias),
            window: spec.window(),
            groups,
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
        let (w, b) = (&self.weight, self.bias.as_ref());
        ops::conv2d_groups(x, w, b, self.window, self.groups)
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
        let groups = match self.groups {
            1 => String::new(),
            g => format!(", groups {g}"),
        };
        format!(
            "Conv2d({}→{}, {}x{}, stride {}, padding {}{groups})",
            s[1] * self.groups,
            s[0],
            s[2],
            s[3],
            w.stride.0,
            w.padding.0
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
    /// The transposed convolution `spec` with a bias; `output_padding` resolves the output size
    /// when the stride is above 1.
    pub fn new(
        spec: Conv2dSpec,
        output_padding: usize,
        init: Init,
        seed: u64,
        device: Device,
    ) -> Result<ConvTranspose2d> {
        let Conv2dSpec {
            in_channels: c,
            out_channels: k_out,
            kernel: k,
            ..
        } = spec;
        // PyTorch's layout [C_in, C_out, k, k]: the fan-in of each output is C_out·k·k.
        let (weight, bias) = init_parameters(
            "conv_transpose2d layer",
            [c, k_out, k, k],
            k_out,
            (k_out * k * k, c * k * k),
            ParameterDraw { init, seed, device },
        )?;
        Ok(ConvTranspose2d {
            weight,
            bias: Some(bias),
            window: spec.window(),
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

/// How a layer's parameters are drawn: the initialization, its seed and the device they live on.
struct ParameterDraw {
    init: Init,
    seed: u64,
    device: Device,
}

/// A conv layer's weight of `shape` and its bias of `outputs` values (the output channels), as
/// gradient leaves; `(fan_in, fan_out)` scale the draw.
fn init_parameters(
    what: &'static str,
    shape: [usize; 4],
    outputs: usize,
    (fan_in, fan_out): (usize, usize),
    draw: ParameterDraw,
) -> Result<(Tensor, Tensor)> {
    if shape.contains(&0) {
        return Err(invalid(what, "channels and kernel size must be positive"));
    }
    let ParameterDraw { init, seed, device } = draw;
    let weight = init.weight(&shape, fan_in, fan_out, seed, device)?;
    let bias = init.bias(outputs, fan_in, seed, device)?;
    Ok((weight.with_grad(), bias.with_grad()))
}
