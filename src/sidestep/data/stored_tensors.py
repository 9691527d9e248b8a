"""What a tensor read from someone else's sample file must be before training touches it: an ordinary dense tensor
of real numbers (not sparse, quantized, complex or a meta placeholder) whose stored values are exactly the ones it
shows. A file can hold a small slice of a huge storage, or one value repeated over a huge shape; the first is read
through a memory map and only the slice is copied, the second is refused before anything is allocated.
"""

import torch

from sidestep.errors import DataError


def dense_copy(path, key: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous `dtype` copy of `value`, owning its memory; `DataError` naming `path` and `key` if it is no
    plain dense tensor. Masks (`dtype=torch.bool`) may be stored as bool, integers or floats holding 0 and 1."""

    def fail(problem: str, fix: str = "re-run preprocessing for this file") -> None:
        raise DataError(f"{path}: {key} {problem}; {fix}")

    if value.layout != torch.strided:
        fail(f"is a {str(value.layout).removeprefix('torch.')} tensor, expected a dense one", "save it with .to_dense()")
    if value.is_quantized:
        fail(f"is quantized ({str(value.dtype).removeprefix('torch.')}), expected real numbers",
             "save it with .dequantize()")
    if value.device.type == "meta":
        fail("is a meta tensor: a shape with no values stored")
    if value.is_complex():
        fail(f"holds complex numbers ({str(value.dtype).removeprefix('torch.')}), expected real ones")
    if dtype is not torch.bool and not value.is_floating_point():
        fail(f"is {str(value.dtype).removeprefix('torch.')}, expected floating-point values")
    if value.numel() > 1 and value.numel() * value.element_size() > _stored_bytes(value):
        fail(f"repeats its stored values over shape {list(value.shape)} (an expanded or overlapping view)",
             "save it with .contiguous()")
    if dtype is torch.bool and value.dtype != torch.bool and not ((value == 0) | (value == 1)).all():
        fail("holds values other than 0 and 1; a mask is 0 or 1 per frame")
    return value.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)


def _stored_bytes(value: torch.Tensor) -> int:
    """Bytes of the storage the view may reach from its offset on."""
    return value.untyped_storage().nbytes() - value.storage_offset() * value.element_size()
