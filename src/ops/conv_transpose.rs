//! Transposed convolution (the 'deconvolution layer').
