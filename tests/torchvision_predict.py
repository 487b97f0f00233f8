#!/usr/bin/env python3
"""torchvision's top-5 for one image and its loss and accuracy on an image folder, for `kiln
predict` and `kiln eval` on a torchvision-saved state_dict.

    python tests/torchvision_predict.py OUT_DIR

Builds torchvision's ResNet-18 for 10 classes (random weights, batch norms moved off their
defaults as tests/torchvision_logits.py does, evaluation mode) and writes
    OUT_DIR/resnet18.safetensors   safetensors.torch.save_file(model.state_dict())
    OUT_DIR/image.png              a seeded 224x224 RGB image (already the input size: no resize)
    OUT_DIR/folder/{train,test}/C/ one seeded 224x224 RGB image per class C = 0..9 and split
then prints "CLASS PROBABILITY" for the 5 most probable classes of the image, and last
"eval LOSS CORRECT" for the folder's test split (ImageFolder's labels: the class folders in
sorted order; LOSS the mean cross-entropy, CORRECT how many the model gets right). Images are
prepared as torchvision's ImageNet recipe does: ToTensor() and Normalize(ImageNet mean, std).

Run by tests/predict.rs; needs torch, torchvision and safetensors.
"""

import pathlib
import sys

import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from torchvision_logits import perturb_batch_norms  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def seeded_image(gen, path):
    """Smooth colour gradients with noise, so the image is not flat."""
    ys, xs = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    noise = torch.rand(3, 224, 224, generator=gen) * 60
    rgb = torch.stack([xs, ys, (xs + ys) / 2]) + noise
    pixels = rgb.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels, "RGB").save(path)


def evaluate(model, prepare, folder, gen):
    """Writes the folder and returns the mean cross-entropy and correct count of its test split."""
    for split in ["train", "test"]:
        for c in range(10):
            (folder / split / str(c)).mkdir(parents=True)
            seeded_image(gen, folder / split / str(c) / "a.png")
    test = torchvision.datasets.ImageFolder(str(folder / "test"), transform=prepare)
    x = torch.stack([image for image, _ in test])
    labels = torch.tensor([label for _, label in test])
    with torch.no_grad():
        logits = model(x).double()
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return loss, correct


def main():
    out = pathlib.Path(sys.argv[1])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10)
    perturb_batch_norms(model, gen)
    model.eval()
    save_file(model.state_dict(), str(out / "resnet18.safetensors"))
    seeded_image(gen, out / "image.png")
    prepare = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    x = prepare(Image.open(out / "image.png").convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model(x).double(), dim=1)[0]
    top = torch.topk(probabilities, 5)
    for p, k in zip(top.values.tolist(), top.indices.tolist()):
        print(k, repr(p))
    loss, correct = evaluate(model, prepare, out / "folder", gen)
    print("eval", repr(loss), correct)


if __name__ == "__main__":
    main()
