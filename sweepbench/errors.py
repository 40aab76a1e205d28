"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a traceback."""


class SweepbenchError(Exception):
    """Bad input or an impossible request. ``str(err)`` is the whole message, one line."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(" ".join(str(message).split()))  # force one line
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SweepbenchError):
    """A bad flag value or combination (exit code 2, like Click's usage errors)."""

    exit_code = 2


OUT_OF_GPU_MEMORY = "out of GPU memory: lower -c or -ub, use -ctk/-ctv q8_0, or free the GPU"


def is_gpu_out_of_memory(e: BaseException) -> bool:
    """A CUDA allocation that the driver refused (numba-cuda's ``CudaAPIError`` for CUDA_ERROR_OUT_OF_MEMORY),
    recognised by name so that this module imports nothing of CUDA."""
    return type(e).__name__ == "CudaAPIError" and "OUT_OF_MEMORY" in str(e)
