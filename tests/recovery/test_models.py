import json
import shutil
import socket

import pytest
import torch

from paser.recovery.models import (
    ModelLoadError,
    check_adapter,
    check_checkpoint,
    choose_dtype,
    convert_gguf,
    describe_model,
    hub_reachable,
    load_adapter,
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


def test_a_truncated_safetensors_file_is_refused_naming_it_before_any_tensor_is_read(truncated_model_dir):
    weights = truncated_model_dir / "model.safetensors"
    expected = (
        f"{weights}: not a readable safetensors file (Error while deserializing header: incomplete metadata, file "
        "not fully covered): truncated or corrupt; copy or save the checkpoint again"
    )
    with pytest.raises(ModelLoadError) as checked:
        check_checkpoint(str(truncated_model_dir))
    with pytest.raises(ModelLoadError) as loaded:
        load_model(str(truncated_model_dir), dtype="fp32", device="cpu")
    assert str(checked.value) == str(loaded.value) == expected


def _spoil_copy(tiny_model_dir, tmp_path, spoil):
    folder = tmp_path / "spoilt"
    shutil.copytree(tiny_model_dir, folder)
    spoil(folder)
    return folder


def _cut(name):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:-40])


def _bin_only_cut(folder):
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    _cut("pytorch_model.bin")(folder)


def _index_naming_a_missing_shard(folder):
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda folder: (folder / "model.safetensors").write_bytes(b""), "model.safetensors: the file is empty"),
        (_cut("config.json"), "config.json: not valid JSON ("),
        (lambda folder: (folder / "config.json").write_text("[]"), "config.json: holds a JSON list, not an object"),
        (_cut("tokenizer.json"), "tokenizer.json: not valid JSON ("),
        (_cut("tokenizer_config.json"), "tokenizer_config.json: not valid JSON ("),
        (_bin_only_cut, "pytorch_model.bin: not a readable PyTorch zip file (File is not a zip file)"),
        (
            _index_naming_a_missing_shard,
            "model.safetensors.index.json names the shard model-00002-of-00002.safetensors",
        ),
        (
            lambda folder: (folder / "model.safetensors").unlink(),
            "spoilt: no weight file (*.safetensors or pytorch_model",
        ),
        (lambda folder: (folder / "config.json").write_text("{}"), "config.json: cannot be read as a model config ("),
    ],
    ids=[
        "empty-weights",
        "cut-config",
        "config-a-list",
        "cut-tokenizer",
        "cut-tokenizer-config",
        "cut-bin",
        "missing-shard",
        "no-weights",
        "no-model-type",
    ],
)
def test_every_unreadable_checkpoint_file_is_one_error_naming_it(tiny_model_dir, tmp_path, spoil, message):
    folder = _spoil_copy(tiny_model_dir, tmp_path, spoil)
    for load in (check_checkpoint, lambda name: load_model(name, dtype="fp32", device="cpu")):
        with pytest.raises(ModelLoadError) as refused:
            load(str(folder))
        assert str(folder) in str(refused.value) and message in str(refused.value)
        assert len(str(refused.value).splitlines()) == 1


def test_a_tokenizer_file_that_parses_but_is_malformed_is_refused_naming_the_folder(tiny_model_dir, tmp_path):
    folder = _spoil_copy(tiny_model_dir, tmp_path, lambda folder: (folder / "tokenizer.json").write_text("{}"))
    with pytest.raises(ModelLoadError) as refused:
        check_checkpoint(str(folder))
    assert str(refused.value) == (
        f"cannot load the tokenizer of {folder} (tokenizer.json, tokenizer_config.json): no key 'added_tokens' in "
        "its files"
    )


def _drop_a_tensor(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _narrow_a_tensor(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:10].contiguous()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_drop_a_tensor, "1 tensor(s) its config needs are missing (first: model.layers.1.mlp.up_proj.weight)"),
        (
            _narrow_a_tensor,
            "1 tensor(s) have another shape than its config says (first: model.layers.1.mlp.up_proj.weight)",
        ),
    ],
    ids=["missing", "reshaped"],
)
def test_weights_that_do_not_fit_the_config_are_refused_not_filled_in_at_random(
    tiny_model_dir, tmp_path, spoil, problem
):
    folder = _spoil_copy(tiny_model_dir, tmp_path, spoil)
    with pytest.raises(ModelLoadError) as refused:
        load_model(str(folder), dtype="fp32", device="cpu")
    assert str(refused.value) == (
        f"{folder}: its weights do not fit its config.json: {problem}; the checkpoint is incomplete or its weights "
        "belong to another model"
    )


def _save_adapter(model, folder):
    from peft import LoraConfig, get_peft_model

    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    return folder


def test_a_truncated_adapter_is_refused_naming_its_file_before_the_model_loads(tiny_model, tmp_path):
    adapter = _save_adapter(tiny_model, tmp_path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match=f"^{weights}: not a readable safetensors file"):
        check_adapter(adapter)


def test_an_adapter_of_another_model_is_refused_in_one_line(tiny_model_dir, tmp_path, single_torch_thread):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 32, 64
    adapter = _save_adapter(LlamaForCausalLM(config), tmp_path / "adapter")
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    with pytest.raises(ModelLoadError) as refused:
        load_adapter(model, adapter)
    assert str(refused.value).startswith(f"cannot apply the adapter in {adapter}: ")
    assert len(str(refused.value).splitlines()) == 1


def test_a_gguf_file_that_cannot_be_parsed_is_refused_naming_it(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\x07" * 40)
    with pytest.raises(ModelLoadError, match=f"^{gguf}: cannot be read as a GGUF checkpoint"):
        convert_gguf(gguf, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()
