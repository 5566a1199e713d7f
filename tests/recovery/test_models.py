import pytest
import torch

from recovery.models import ModelLoadError, choose_dtype, describe_model, load_model, resolve_model


def test_missing_local_path_is_refused():
    with pytest.raises(ModelLoadError, match="model path does not exist: ./no/such/model"):
        resolve_model("./no/such/model")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_is_passed_through_unchanged():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_explicit_dtypes_and_unknown_dtype():
    assert choose_dtype("fp32") is torch.float32
    assert choose_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int3'; known: auto"):
        choose_dtype("int3")


def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch):
    monkeypatch.setattr("recovery.models.cpu_supports_bf16", lambda: True)
    assert choose_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr("recovery.models.cpu_supports_bf16", lambda: False)
    assert choose_dtype("auto", "cpu") is torch.float32


def test_local_model_loads_in_eval_mode_with_a_pad_token(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert not model.training
    assert tokenizer.pad_token_id is not None
    info = describe_model("tiny", model)
    assert info.dtype == "float32" and info.parameters > 0
