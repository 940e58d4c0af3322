"""environment(): what every benchmark figure is stored with."""

from __future__ import annotations

import platform
import socket

import torch


def environment() -> dict:
    env = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": None, "driver": None, "pycuda": None, "sms": None, "capability": None,
    }
    try:
        import pycuda

        env["pycuda"] = pycuda.VERSION_TEXT
    except Exception:
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(gpu=p.name, sms=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                   memory_gb=round(p.total_memory / 2**30, 1))
        try:
            import pycuda.driver as cuda

            cuda.init()
            v = cuda.get_driver_version()
            env["driver"] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            pass
    return env
