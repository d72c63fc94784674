import os

import pytest

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.path.exists(FMNIST):
        return
    skip = pytest.mark.skip(reason="Debian's dataset-fashion-mnist is missing (the README's test command installs it)")
    for item in items:
        if "fmnist" in item.keywords:
            item.add_marker(skip)
