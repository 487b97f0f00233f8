//! Sequential: named children applied in order. [`Sequential::push`] names them "0", "1", ... like
//! PyTorch's `nn.Sequential`; [`Sequential::push_named`] gives a name, like an `nn.Module`
//! attribute (`conv1`, `layer1`, `fc`), so whole torchvision networks keep their `state_dict` names.

use super::module::{Mode, Module};
use crate::core::error::Result;
use crate::tensor::Tensor;

/// Modules applied one after another.
#[derive(Default)]
pub struct Sequential {
    children: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a module named by its position (builder style).
    pub fn push(self, m: impl Module + 'static) -> Sequential {
        let name = self.children.len().to_string();
        self.push_named(name, m)
    }

    /// Appends a module under `name`.
    pub fn push_named(mut self, name: impl Into<String>, m: impl Module + 'static) -> Sequential {
        self.children.push((name.into(), Box::new(m)));
        self
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut h = x.clone();
        for (_, child) in &mut self.children {
            h = child.forward(&h, mode)?;
        }
        Ok(h)
    }

    fn children(&self) -> Vec<(&str, &dyn Module)> {
        let named = self.children.iter();
        named.map(|(n, c)| (n.as_str(), c.as_ref())).collect()
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        let named = self.children.iter_mut();
        named
            .map(|(n, c)| (n.as_str(), c.as_mut() as &mut dyn Module))
            .collect()
    }

    fn describe(&self) -> String {
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for (_, child) in &self.children {
            let kind = child.describe();
            let kind = kind.split('(').next().unwrap_or_default().to_string();
            match kinds.last_mut() {
                Some((last, n)) if *last == kind => *n += 1,
                _ => kinds.push((kind, 1)),
            }
        }
        let parts: Vec<String> = kinds
            .into_iter()
            .map(|(k, n)| if n == 1 { k } else { format!("{k} x{n}") })
            .collect();
        format!("Sequential({})", parts.join(", "))
    }
}
