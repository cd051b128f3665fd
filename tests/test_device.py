"""Devices: the --device flag and device= argument, the CPU fallback, and GPU state saved as CPU arrays.

These run on CPU machines: "no GPU" is made certain by patching the backends' `gpu_count`, and a
model "on a GPU" is simulated by storages that refuse to become numpy arrays until copied to the
host, as CUDA tensors do. The real GPU runs are `benchmarks/gpu_check.sh`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import cli
from rnncore.device import Device, DeviceError, parse_device, resolve_device
from rnncore.tolerances import compare

TINY = {
    "input": {"kind": "tokens", "vocab_size": 30, "embedding_dim": 4, "padding_idx": 0},
    "encoder": {"cell": "lstm", "hidden_size": 5, "num_layers": 2, "bidirectional": True},
    "pooling": "mean",
    "head": {"hidden": [3], "num_outputs": 2},
}


@pytest.fixture
def no_gpu(monkeypatch):
    """Both backends report no GPU, whatever this machine has."""
    for backend in ("torch", "tensorflow"):
        monkeypatch.setattr(rnncore.get_backend(backend), "gpu_count", lambda: 0)


# ---- parsing and resolving -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "device"),
    [("auto", Device("auto")), ("cpu", Device("cpu")), ("cuda", Device("cuda")),
     ("cuda:3", Device("cuda", 3)), (" CUDA:1 ", Device("cuda", 1))],
)  # fmt: skip
def test_device_strings_parse(text, device):
    assert parse_device(text) == device


@pytest.mark.parametrize(
    ("text", "message"),
    [("gpu", "expected auto, cpu, cuda or cuda:N"), ("cuda:", "expected auto"), ("cuda:-1", "expected auto"),
     ("cpu:0", "only cuda takes an index"), ("", "expected auto"), ("mps", "expected auto")],
)  # fmt: skip
def test_malformed_device_strings_are_refused_naming_what_is_allowed(text, message):
    with pytest.raises(DeviceError, match=message):
        parse_device(text)


@pytest.mark.parametrize(
    ("requested", "gpus", "resolved"),
    [("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 4, "cpu"), ("cuda", 1, "cuda:0"),
     ("cuda:1", 2, "cuda:1")],
)  # fmt: skip
def test_devices_resolve_to_a_concrete_one(requested, gpus, resolved):
    assert str(resolve_device(requested, gpus)) == resolved


def test_cuda_without_a_gpu_is_refused_not_run_on_the_cpu():
    with pytest.raises(DeviceError, match=r"torch sees no GPU.*--device cpu"):
        resolve_device("cuda", 0, "torch")


def test_a_gpu_index_past_the_last_is_refused_naming_the_range():
    with pytest.raises(DeviceError, match=r"sees 2 GPU\(s\), cuda:0 \.\. cuda:1"):
        resolve_device("cuda:2", 2)


def test_processes_of_a_distributed_run_take_no_gpu_index():
    from rnncore.train.distributed import worker_device

    assert worker_device("auto") == "auto" and worker_device("cuda") == "cuda"
    with pytest.raises(DeviceError, match="local rank"):
        worker_device("cuda:1")


# ---- the Python API --------------------------------------------------------------------------
def test_build_and_load_place_a_model_on_the_cpu(backend, tmp_path):
    spec = rnncore.ModelSpec.from_dict(TINY)
    model = rnncore.build(spec, backend=backend, device="cpu")
    assert rnncore.device_of(model) == "cpu"
    rnncore.save(model, tmp_path / "bundle")
    loaded = rnncore.load(tmp_path / "bundle", backend=backend, device="auto")
    ids = np.array([[3, 4, 5, 0], [6, 7, 8, 9]])
    np.testing.assert_array_equal(rnncore.predict(loaded, ids), rnncore.predict(model, ids))


def test_build_on_cuda_without_a_gpu_raises(backend, no_gpu):
    spec = rnncore.ModelSpec.from_dict(TINY)
    with pytest.raises(DeviceError, match=f"device cuda: {backend} sees no GPU"):
        rnncore.build(spec, backend=backend, device="cuda")


# ---- the command line ------------------------------------------------------------------------
@pytest.fixture
def bundle_folder(tmp_path: Path) -> Path:
    model = rnncore.build(rnncore.ModelSpec.from_dict(TINY), backend="torch")
    return Path(rnncore.save(model, tmp_path / "bundle"))


@pytest.mark.parametrize(
    "command",
    [["train", "--out", "RUN"], ["evaluate", "BUNDLE", "--data", "x.csv"], ["predict", "BUNDLE", "a text"],
     ["explain", "BUNDLE", "a text"], ["parity", "--backends", "torch"]],
)  # fmt: skip
def test_every_command_refuses_cuda_without_a_gpu(command, bundle_folder, tmp_path, no_gpu, capsys):
    args = [
        str(bundle_folder) if a == "BUNDLE" else str(tmp_path / "run") if a == "RUN" else a for a in command
    ]
    assert cli.main([*args, "--device", "cuda"]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "rnncore: error: device cuda: torch sees no GPU on this machine; use --device cpu, "
        "or --device auto to take a GPU only when there is one"
    ]
    assert captured.out == "" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_is_refused_until_it_exists(precision, tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--precision", precision]) == cli.EXIT_USAGE
    assert (
        f"--precision {precision}: mixed-precision training (autocast) is not available"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_a_malformed_device_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["parity", "--device", "gpu:0"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "device: got 'gpu:0'; expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_cuda_on_a_machine_without_a_gpu_exits_2_with_one_line():
    # the child sees no GPU on any machine (CUDA_VISIBLE_DEVICES empty), so this runs everywhere
    done = subprocess.run(
        [sys.executable, "-m", "rnncore", "parity", "--backends", "torch", "--device", "cuda"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "rnncore: error: device cuda: torch sees no GPU on this machine; use --device cpu, "
        "or --device auto to take a GPU only when there is one"
    ]


def _train(data: Path, run: Path, *flags: str) -> int:
    return cli.main(["train", "--task", "sequence-classification", "--data", str(data), "--out", str(run),
                     "--epochs", "1", "--quiet", *flags])  # fmt: skip


def test_auto_falls_back_to_the_cpu_says_so_and_records_it(digits_npz, tmp_path, no_gpu, capsys):
    run = tmp_path / "run"
    assert _train(digits_npz(60), run) == 0  # --device auto is the default
    assert "device cpu (auto: torch sees no GPU)" in capsys.readouterr().out
    assert json.loads((run / "run.json").read_text())["device"] == "cpu"


def test_a_cpu_run_trains_evaluates_and_predicts_on_either_backend(backend, digits_npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(digits_npz(60), run, "--backend", backend, "--device", "cpu") == 0
    assert json.loads((run / "run.json").read_text())["device"] == "cpu"
    assert f"backend {backend}, device cpu," in capsys.readouterr().out
    assert cli.main(["evaluate", str(run), "--json", "--device", "cpu"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0


# ---- GPU state in checkpoints ----------------------------------------------------------------
class SimulatedGpu:
    """Marks tensors' storages as device memory: like a CUDA tensor's, `.numpy()` of one raises
    until `.cpu()` copies it to the host. Patches torch.Tensor for the test only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import torch

        self.storages: set[int] = set()
        numpy, cpu = torch.Tensor.numpy, torch.Tensor.cpu

        def on_device(tensor: torch.Tensor) -> bool:
            return tensor.numel() > 0 and tensor.untyped_storage().data_ptr() in self.storages

        def device_numpy(tensor: torch.Tensor, *args: object, **kwargs: object) -> np.ndarray:
            if on_device(tensor):  # torch's own message for a CUDA tensor
                raise TypeError(
                    "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                    "tensor to host memory first."
                )
            return numpy(tensor, *args, **kwargs)

        def device_cpu(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
            return tensor.clone() if on_device(tensor) else cpu(tensor, *args, **kwargs)  # a host copy

        monkeypatch.setattr(torch.Tensor, "numpy", device_numpy)
        monkeypatch.setattr(torch.Tensor, "cpu", device_cpu)

    def hold(self, tensors: list) -> None:
        self.storages.update(t.untyped_storage().data_ptr() for t in tensors if t.numel() > 0)


def _trained(steps: int = 2):
    from rnncore.train.config import TrainConfig

    spec = rnncore.ModelSpec.from_dict(TINY)
    model = rnncore.build(spec, backend="torch", seed=1)
    trainer = rnncore.get_backend("torch").make_trainer(model, TrainConfig(optimizer="adam", lr=1e-2))
    batch = _batch()
    for _ in range(steps):
        trainer.step(*batch, 1e-2)
    return model, trainer


def _batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([[3, 4, 5, 0], [6, 7, 8, 9], [10, 11, 0, 0]], dtype=np.int64)
    return ids, np.array([3, 4, 2]), np.array([0, 1, 1])


def test_a_checkpoint_written_from_gpu_state_resumes_on_the_cpu(tmp_path, monkeypatch):
    from rnncore import bundle
    from rnncore.data import LabelVocab
    from rnncore.train.loop import History
    from rnncore.train.run import Encoder, save_checkpoint

    model, trainer = _trained()
    weights, slots = rnncore.get_weights(model), trainer.optimizer_state()
    gpu = SimulatedGpu(monkeypatch)
    state = [s for param_state in trainer.optimizer.state.values() for s in param_state.values()]
    gpu.hold([*model.parameters(), *state])
    with pytest.raises(TypeError, match="cuda:0 device type tensor"):  # the simulation bites
        next(model.parameters()).detach().numpy()
    encoder = Encoder("sequence-classification", LabelVocab(("no", "yes")))
    save_checkpoint(tmp_path, model, trainer, History(), 0, encoder, keep_best=False)
    monkeypatch.undo()

    folder = tmp_path / "checkpoints" / "epoch-0001"
    spec, saved = bundle.load_weights_and_spec(folder)
    resumed = rnncore.build(spec, backend="torch", weights=saved, device="cpu")
    again = rnncore.get_backend("torch").make_trainer(resumed, trainer.config)
    again.load_optimizer_state(bundle.read_weights(folder / "optimizer.safetensors"))
    for name in weights:
        np.testing.assert_array_equal(saved[name], weights[name], err_msg=name)
    for name, value in again.optimizer_state().items():
        np.testing.assert_array_equal(value, slots[name], err_msg=name)
    # one more step from the checkpoint is the uninterrupted run's next step, bit for bit
    assert again.step(*_batch(), 1e-2) == trainer.step(*_batch(), 1e-2)
    for name, value in rnncore.get_weights(resumed).items():
        np.testing.assert_array_equal(value, rnncore.get_weights(model)[name], err_msg=name)


def test_optimizer_state_loads_onto_the_device_of_the_parameters():
    import torch

    model, trainer = _trained()
    slots = trainer.optimizer_state()
    model.to(torch.device("meta"))  # tensors with a device but no data: any device but the CPU
    moved = rnncore.get_backend("torch").make_trainer(model, trainer.config)
    moved.load_optimizer_state(slots)
    devices = {value.device.type for state in moved.optimizer.state.values() for key, value in state.items()
               if key != "step"}  # fmt: skip
    assert devices == {"meta"}


# ---- numerics on a GPU -----------------------------------------------------------------------
def test_parity_runs_with_tf32_off_and_puts_it_back(monkeypatch):
    import torch

    torch_backend = rnncore.get_backend("torch")
    seen = []
    predict = torch_backend.predict

    def recording_predict(*args):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return predict(*args)

    monkeypatch.setattr(torch_backend, "predict", recording_predict)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    spec = rnncore.ModelSpec.from_dict(TINY)
    rnncore.parity.parity_report(spec, ("torch",), batch=2, max_len=4)
    rnncore.parity.parity_report(spec, ("torch",), batch=2, max_len=4, tf32=True)
    assert seen == [(False, False), (True, True)]
    assert torch.backends.cudnn.allow_tf32 is True


def test_tensorflow_tf32_switch_is_restored():
    tf = pytest.importorskip("tensorflow")
    backend = rnncore.get_backend("tensorflow")
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    with backend.tf32(not before):
        assert tf.config.experimental.tensor_float_32_execution_enabled() is (not before)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is before


def test_gpu_results_are_compared_with_the_gpu_tolerances():
    expected = np.ones(4, dtype=np.float32)
    off_by_a_few_ulps_per_step = expected + 3e-5  # cuDNN's summation order, not a bug
    assert not compare(off_by_a_few_ulps_per_step, expected, "outputs", "float32").ok
    assert compare(off_by_a_few_ulps_per_step, expected, "outputs", "float32", gpu=True).ok
    assert not compare(expected + 1e-3, expected, "outputs", "float32", gpu=True).ok  # TF32's size


# ---- TensorFlow kept off the GPU -------------------------------------------------------------
def test_tensorflow_cpu_hides_the_gpus_before_first_use(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    from rnncore_tensorflow.device import use_device

    hidden = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: hidden.append(devices))
    use_device("cpu")
    use_device("cuda:0")  # left to TensorFlow
    assert hidden == [[]]


def test_tensorflow_cpu_is_refused_once_it_runs_on_a_gpu(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    from rnncore_tensorflow.device import use_device

    def started(devices, kind=None):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/GPU:0"])
    monkeypatch.setattr(tf.config, "set_visible_devices", started)
    with pytest.raises(DeviceError, match="TensorFlow already runs on the GPU"):
        use_device("cpu")


# ---- the GPU check script --------------------------------------------------------------------
def test_the_gpu_check_runs_every_section_at_toy_sizes_on_the_cpu(tmp_path, monkeypatch):
    """`benchmarks/gpu_check.sh` runs only where a GPU is lent; its smoke mode keeps it working."""
    pytest.importorskip("safetensors")
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the CLI section runs `python -m rnncore`
    from benchmarks import gpu_check

    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    found = json.loads(out.read_text())
    assert found["format"] == "rnncore.gpu_check/1" and found["environment"]["device"] == "cpu"
    summary = found["parity"]["summary"]
    assert set(summary) == {"float32-tf32-off", "float32-tf32-on", "float64-tf32-off"}
    assert all(diff["all_ok_gpu_tolerance"] for worst in summary.values() for diff in worst.values())
    assert found["training"]["weights"]["max_abs"] == 0.0  # two CPU models: the same arithmetic
    assert found["checkpoint"]["cpu->cpu"]["next_step"]["max_abs"] == 0.0
    assert found["checkpoint"]["cli"]["run_json_device"] == "cpu"
    assert found["checkpoint"]["cli"]["evaluate_cpu"]["accuracy"] > 0.0
    ratios = [case["ratio_train"] for case in found["benchmark"]["cases"]]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)


def test_the_gpu_check_refuses_to_run_without_a_gpu(no_gpu, capsys):
    from benchmarks import gpu_check

    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "torch sees no GPU" in capsys.readouterr().err
