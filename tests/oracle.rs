//! kiln's CPU reference checked against an independent framework: forward outputs and gradients of
//! convolution, transposed convolution and every pooling kind, computed by JAX in f64 by
//! tests/oracle/generate.py (the values are committed in tests/oracle/values.json).

use std::collections::HashMap;

use kiln::testing::assert_close;
use kiln::{ops, Device, Tensor, Window2d};
use serde_json::Value;

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Tensor::from_vec(data, &shape, Device::Cpu).unwrap()
}

fn pair(p: &Value, key: &str) -> (usize, usize) {
    let a = p[key].as_array().unwrap_or_else(|| panic!("missing {key}"));
    (
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    )
}

fn window(p: &Value) -> Window2d {
    let padding = pair(p, "padding");
    let padding_end = if p.get("padding_end").is_some() {
        pair(p, "padding_end")
    } else {
        padding
    };
    let dilation = if p.get("dilation").is_some() {
        pair(p, "dilation")
    } else {
        (1, 1)
    };
    Window2d {
        kernel: pair(p, "kernel"),
        stride: pair(p, "stride"),
        padding,
        padding_end,
        dilation,
        floor_output: false,
    }
}

/// Runs one case's op on kiln's CPU reference with the inputs as gradient leaves.
fn run(op: &str, p: &Value, inputs: &HashMap<String, Tensor>) -> Tensor {
    let x = &inputs["x"];
    let groups = || p["groups"].as_u64().unwrap() as usize;
    match op {
        "conv2d" => ops::conv2d_groups(x, &inputs["w"], Some(&inputs["b"]), window(p), groups()),
        "conv_transpose2d" => ops::conv_transpose2d(
            x,
            &inputs["w"],
            Some(&inputs["b"]),
            window(p),
            pair(p, "output_padding"),
            groups(),
        ),
        "max_pool2d" => ops::max_pool2d(x, window(p)),
        "avg_pool2d" => ops::avg_pool2d(x, window(p), p["count_include_pad"].as_bool().unwrap()),
        "l2_pool2d" => ops::l2_pool2d(x, window(p)),
        "global_avg_pool2d" => ops::global_avg_pool2d(x),
        other => panic!("no runner for {other}"),
    }
    .unwrap_or_else(|e| panic!("{op}: {e}"))
}

#[test]
fn convolution_and_pooling_match_jax() {
    let text = include_str!("oracle/values.json");
    let root: Value = serde_json::from_str(text).unwrap();
    let cases = root["cases"].as_array().unwrap();
    assert!(cases.len() >= 18);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let inputs: HashMap<String, Tensor> = case["inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), tensor(v).with_grad()))
            .collect();
        let y = run(case["op"].as_str().unwrap(), &case["params"], &inputs);
        let expected = tensor(&case["output"]);
        assert_eq!(y.shape(), expected.shape(), "{name}: output shape");
        eprintln!("{name}: output");
        assert_close(
            &y.to_vec::<f64>().unwrap(),
            &expected.to_vec::<f64>().unwrap(),
            1e-12,
            1e-10,
        );
        let weights = tensor(&case["weights"]);
        let grads = ops::sum(&ops::mul(&y, &weights).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        for (input, g) in case["grads"].as_object().unwrap() {
            eprintln!("{name}: gradient of {input}");
            let got = grads
                .get(&inputs[input])
                .unwrap_or_else(|| panic!("{name}: no gradient for {input}"));
            assert_close(
                &got.to_vec::<f64>().unwrap(),
                &tensor(g).to_vec::<f64>().unwrap(),
                1e-12,
                1e-10,
            );
        }
    }
}
