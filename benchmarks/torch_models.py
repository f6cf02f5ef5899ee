"""The same architectures in PyTorch, for the static (TF graph) vs dynamic (PyTorch) training comparison.

Written to match cnnkit's Keras definitions layer for layer at CIFAR size: ``resnet18`` (3x3 stride-1
stem, no max-pooling, basic blocks with 1x1-conv + BN projections) and ``mobilenet_v2`` (stride-1 stem
below 64 pixels, inverted residuals, BN epsilon 1e-3). The tests check that the trainable parameter
counts equal the Keras models' exactly. Channels-first, as PyTorch runs convolutions.
"""
import torch
from torch import nn


def conv_bn(cin, cout, kernel, stride=1, groups=1, eps=1e-5, act=None):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps, momentum=0.01)]
    if act:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride, act=nn.ReLU), conv_bn(cout, cout, 3))
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        blocks, cin = [conv_bn(3, 64, 3, act=nn.ReLU)], 64
        for stage in range(4):
            cout = 64 * 2 ** stage
            for b in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if b == 0 and stage > 0 else 1))
                cin = cout
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn(cin, hidden, 1, eps=1e-3, act=nn.ReLU6)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, eps=1e-3, act=nn.ReLU6),
                   conv_bn(hidden, cout, 1, eps=1e-3)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    LAYERS = [(16, 1, 1, 1), (24, 2, 6, 2), (32, 2, 6, 3), (64, 2, 6, 4), (96, 1, 6, 3), (160, 2, 6, 3),
              (320, 1, 6, 1)]

    def __init__(self, num_classes=10, small_input=True):
        super().__init__()
        blocks, cin = [conv_bn(3, 32, 3, 1 if small_input else 2, eps=1e-3, act=nn.ReLU6)], 32
        for cout, stride, expansion, repeats in self.LAYERS:
            for r in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if r == 0 else 1, expansion))
                cin = cout
        blocks.append(conv_bn(cin, 1280, 1, eps=1e-3, act=nn.ReLU6))
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class Bottleneck(nn.Module):
    """ResNet-50's block as cnnkit (and torchvision) build it: the stride on the 3x3 convolution."""

    def __init__(self, cin, width, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 1, act=nn.ReLU), conv_bn(width, width, 3, stride, act=nn.ReLU),
                                  conv_bn(width, width * 4, 1))
        self.shortcut = conv_bn(cin, width * 4, 1, stride) if stride != 1 or cin != width * 4 else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    """ImageNet form: 7x7 stride-2 stem and 3x3 max-pooling, then 3, 4, 6, 3 bottleneck blocks."""

    def __init__(self, num_classes=1000):
        super().__init__()
        blocks, cin = [conv_bn(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)], 64
        for stage, repeats in enumerate((3, 4, 6, 3)):
            width = 64 * 2 ** stage
            for b in range(repeats):
                blocks.append(Bottleneck(cin, width, 2 if b == 0 and stage > 0 else 1))
                cin = width * 4
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


MODELS = {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2}


def create_imagenet(name, num_classes=1000):
    """The ImageNet form (224x224 input: strided stems) of ``mobilenet_v2`` or ``resnet50``."""
    if name == "mobilenet_v2":
        return MobileNetV2(num_classes=num_classes, small_input=False)
    if name == "resnet50":
        return ResNet50(num_classes=num_classes)
    raise KeyError(f"no ImageNet-form PyTorch twin of {name}")


def create(name, num_classes=10):
    return MODELS[name](num_classes=num_classes)


def trainable_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
