"""The ``imports`` stage of ``bench/gpu_check.py``, run as a child: the third-party packages the path
needs (deepspeed, datasets, nltk first: the lent GPU machine gets them from carried wheels), then
every module of ``qa_scale`` (walked with pkgutil). Prints one JSON line; exit status 1 and one line
naming the first module that failed, at once.

``--ops``: build (or load) the DeepSpeed JIT ops the path's processes load, in the run's extension
folder (``TORCH_EXTENSIONS_DIR``), under a timeout of its own: on the CPU every DeepSpeed process group
loads the shared-memory all-reduce (``deepspeed_shm_comm``), whose first build takes 30-90 s, more than
a training child's timeout; on a GPU the CUDA accelerator has no such op and nothing is built.

A module that fails only because the HTTP service's packages (fastapi, uvicorn, starlette) are absent
is listed under ``not_carried``, not failed: the GPU machine lacks them by design, and the rehearsal
answers through ``qa-scale answer`` instead of the service.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
import traceback

PACKAGES = ("deepspeed", "datasets", "nltk", "torch", "transformers", "tokenizers", "peft", "accelerate",
            "safetensors", "pyarrow", "numpy", "scipy", "yaml", "tqdm", "matplotlib", "tensorboard")
SERVICE_ONLY = {"fastapi", "uvicorn", "starlette"}


def _fail(name: str, exc: BaseException) -> int:
    """The one line (stderr, and as JSON on stdout) naming the module; exit status 1."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {where.filename}:{where.lineno})" if where else ""
    line = f"import {name} failed: {type(exc).__name__}: {exc}{at}"
    print(json.dumps({"failed": name, "error": line}))
    print(line, file=sys.stderr)
    return 1


def build_ops() -> int:
    """Build or load the ops of a DeepSpeed process group on this accelerator; one JSON line."""
    t0 = time.perf_counter()
    from deepspeed.comm.torch import build_shm_op  # what TorchBackend loads when a group is made

    try:
        built = build_shm_op() is not None
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return _fail("deepspeed.comm.torch.build_shm_op", exc)
    print(json.dumps({"shm_comm": built, "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


def main() -> int:
    if sys.argv[1:] == ["--ops"]:
        return build_ops()
    t0 = time.perf_counter()
    seconds, versions, not_carried = {}, {}, {}
    for name in PACKAGES:
        t = time.perf_counter()
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return _fail(name, exc)
        seconds[name] = round(time.perf_counter() - t, 2)
        versions[name] = getattr(module, "__version__", None)
    import qa_scale

    walk_errors: list[str] = []
    names = [m.name for m in pkgutil.walk_packages(qa_scale.__path__, "qa_scale.", onerror=walk_errors.append)]
    names = ["qa_scale", *(n for n in names if n.rsplit(".", 1)[-1] != "__main__")]  # __main__ runs the CLI
    for name in [*walk_errors, *names]:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in SERVICE_ONLY:
                not_carried[name] = f"{type(exc).__name__}: {exc}"
                continue
            return _fail(name, exc)
        except Exception as exc:  # noqa: BLE001
            return _fail(name, exc)
    print(json.dumps({"packages": versions, "package_seconds": seconds, "qa_scale_modules": len(names),
                      "not_carried": not_carried, "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
