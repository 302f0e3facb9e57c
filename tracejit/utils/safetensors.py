"""safetensors files without the ``safetensors`` package, with ``safetensors.torch``'s names:
``save_file(tensors, filename, metadata=None)`` and ``load_file(filename, device="cpu")``
(``tj.load`` reads them too). See docs/saving.md.
"""

from ..saving.safetensors_file import load_file, save_file

__all__ = ["save_file", "load_file"]
