"""Datasets. Each loader returns tensors in [0, 1], NCHW, and fails with a message
naming the package that provides its files."""

from training.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist"]
