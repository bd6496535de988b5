"""A real Triton Inference Server on loopback: the tritonserver 2.51 that ``nvidia-pytriton`` bundles.

The PyPI wheel ``nvidia-pytriton`` 0.7.0 carries tritonserver with its Python backend and one
backend stub per Python version. The stub links the system's ``libpython3.11``, so it works from a
virtualenv made with Debian's ``/usr/bin/python3.11`` (as PyTriton itself runs it: that venv's
``bin`` first on ``PATH``, the wheel's libraries on ``LD_LIBRARY_PATH``); under another 3.11 build
it fails. The environment is made once under ``var/triton-env`` (like the Orthanc tests use the
Debian package) and reused; the checkout is put on its ``sys.path`` with a ``.pth`` file, so the
served model imports this tree's ``ichnet_core``. Where it cannot be made, tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import torch

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
ENV_DIR: Final[Path] = REPO_ROOT / "var" / "triton-env"
DEBIAN_PYTHON: Final[Path] = Path("/usr/bin/python3.11")
#: What the environment holds: the bundled server, and what the served model imports.
REQUIREMENTS: Final[tuple[str, ...]] = (
    "nvidia-pytriton==0.7.0",
    f"torch=={torch.__version__.split('+')[0]}",
    "onnxruntime",
    "numpy",
)
INSTALL_TIMEOUT_S: Final[float] = 1200.0
STARTUP_TIMEOUT_S: Final[float] = 180.0


class TritonUnavailable(RuntimeError):
    """No tritonserver can run here; the message says why (tests skip with it)."""


@dataclass(frozen=True)
class TritonEnvironment:
    """The parts of the environment that starting a server needs."""

    venv: Path

    @property
    def site_packages(self) -> Path:
        return self.venv / "lib" / "python3.11" / "site-packages"

    @property
    def server_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def backend_dir(self) -> Path:
        return self.venv.parent / "backends"


def _install(venv: Path) -> None:
    marker = venv / "ichnet-requirements.txt"
    wanted = "\n".join(REQUIREMENTS)
    if marker.is_file() and marker.read_text() == wanted:
        return
    steps = [
        [str(DEBIAN_PYTHON), "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", *REQUIREMENTS],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise TritonUnavailable(f"{' '.join(step[:3])} took over {exc.timeout:.0f} s") from exc
        if done.returncode != 0:
            raise TritonUnavailable(
                f"cannot make the Triton environment ({' '.join(step[:4])}): "
                f"{(done.stderr or done.stdout)[-800:]}"
            )
    marker.write_text(wanted)


def triton_environment() -> TritonEnvironment:
    """The environment under ``var/triton-env``, made on first use.

    Raises
    ------
    TritonUnavailable
        No Debian python3.11, or the wheels cannot be installed (no network, no wheel).
    """
    if not DEBIAN_PYTHON.is_file():
        raise TritonUnavailable(
            f"{DEBIAN_PYTHON} not found: nvidia-pytriton's backend stub links Debian's "
            "libpython3.11 (apt-get install python3.11 python3.11-venv)"
        )
    env = TritonEnvironment(ENV_DIR / "venv")
    _install(env.venv)
    (env.site_packages / "ichnet-checkout.pth").write_text(f"{REPO_ROOT}\n")
    python_backend = env.backend_dir / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    bundled = env.server_dir / "backends" / "python"
    links = {
        "libtriton_python.so": bundled / "libtriton_python.so",
        "triton_python_backend_utils.py": bundled / "triton_python_backend_utils.py",
        "triton_python_backend_stub": env.server_dir
        / "python_backend_stubs"
        / "3.11"
        / "triton_python_backend_stub",
    }
    for name, target in links.items():
        if not target.is_file():
            raise TritonUnavailable(f"{target} missing from nvidia-pytriton")
        link = python_backend / name
        if not link.is_symlink():
            link.symlink_to(target)
    return env


@dataclass
class TritonServer:
    """A running tritonserver process and its gRPC address."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _server_command(
    env: TritonEnvironment, repository: Path, ports: tuple[int, int], models: tuple[str, ...]
) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment (as PyTriton runs its bundled server)."""
    grpc_port, http_port = ports
    command = [
        str(env.server_dir / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={env.backend_dir}",
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model in models),
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        "--allow-metrics=false",
    ]
    environment = {
        **os.environ,
        "PATH": f"{env.venv / 'bin'}:{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": str(env.libs_dir),
        "OMP_NUM_THREADS": "1",
    }
    environment.pop("PYTHONPATH", None)
    return command, environment


def load_once(
    env: TritonEnvironment, repository: Path, models: tuple[str, ...], ports: tuple[int, int]
) -> str:
    """Start tritonserver on ``models`` and return its output once it has given up or served:
    a model whose backend is missing makes it exit after parsing every config."""
    command, environment = _server_command(env, repository, ports, models)
    try:
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"tritonserver kept running with {models}") from exc
    return done.stdout + done.stderr


def start_triton(
    env: TritonEnvironment,
    repository: Path,
    log_path: Path,
    *,
    ports: tuple[int, int],
    models: tuple[str, ...] = ("ichnet",),
) -> TritonServer:
    """Serve ``models`` of ``repository`` (gRPC on ``ports[0]``, HTTP on ``ports[1]``); returns
    once every model is ready."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    grpc_port, _ = ports
    command, environment = _server_command(env, repository, ports, models)
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = TritonServer(process, grpc_port, log_path)
    client = grpcclient.InferenceServerClient(server.url)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited at start:\n{server.log()[-3000:]}")
        try:
            if all(client.is_model_ready(model) for model in models):
                return server
        except InferenceServerException:  # not listening yet
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(
        f"tritonserver not ready within {STARTUP_TIMEOUT_S} s:\n{server.log()[-3000:]}"
    )
