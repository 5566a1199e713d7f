import socket

import pytest
import torch

from paser.recovery.models import (
    ModelLoadError,
    choose_dtype,
    describe_model,
    hub_reachable,
    load_model,
    resolve_device,
    resolve_model,
)


def test_missing_local_path_is_refused():
    with pytest.raises(ModelLoadError, match="model path does not exist: ./no/such/model"):
        resolve_model("./no/such/model")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_is_passed_through_unchanged_when_the_hub_is_reachable(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("paser.recovery.models.hub_reachable", lambda endpoint: True)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_hub_id_is_refused_at_once_when_the_hub_cannot_be_reached(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("paser.recovery.models.hub_reachable", lambda endpoint: False)
    with pytest.raises(ModelLoadError, match="'paser-tests/no-such-model' is neither a local folder nor in the"):
        resolve_model("paser-tests/no-such-model")


def test_a_closed_port_is_not_reachable_and_a_proxy_is_trusted(monkeypatch):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    assert not hub_reachable.__wrapped__(f"http://127.0.0.1:{port}", timeout=2)
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    assert hub_reachable.__wrapped__(f"http://127.0.0.1:{port}", timeout=2)


def test_unknown_and_unusable_devices_are_refused(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr("torch.version.cuda", "12.8")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"device 'cuda:1' cannot be used: only 1 CUDA GPU\(s\) are visible"):
        resolve_device("cuda:1")


def test_explicit_dtypes_and_unknown_dtype():
    assert choose_dtype("fp32") is torch.float32
    assert choose_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int3'; known: auto"):
        choose_dtype("int3")


def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch):
    monkeypatch.setattr("paser.recovery.models.cpu_supports_bf16", lambda: True)
    assert choose_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr("paser.recovery.models.cpu_supports_bf16", lambda: False)
    assert choose_dtype("auto", "cpu") is torch.float32


def test_local_model_loads_in_eval_mode_with_a_pad_token(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert not model.training
    assert tokenizer.pad_token_id is not None
    info = describe_model("tiny", model)
    assert info.dtype == "float32" and info.parameters > 0


def test_a_bin_only_folder_loads_and_says_which_format_was_read(tiny_model_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    from paser.recovery.models import load_model, pickled_weights

    folder = tmp_path / "bin_only"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    assert pickled_weights(folder) == ["pytorch_model.bin"] and pickled_weights(tiny_model_dir) == []
    model, _ = load_model(str(folder), dtype="fp32", device="cpu")
    reference, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[paser]")]
    assert notices == [
        f"[paser] {folder}: weights read from pytorch_model.bin (PyTorch pickle, loaded weights-only; "
        "no safetensors file in the folder)"
    ]
