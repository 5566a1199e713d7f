import json
import math
import random

import pytest
import torch

from paser.data.paths import data_dir
from paser.recovery.evaluate import (
    ALL_TASKS,
    PPL_TASKS,
    evaluate_model,
    format_summary,
    load_ppl_text,
    parse_tasks,
    perplexity,
    required_files,
    results_table,
    run_eval,
)
from paser.recovery.items import read_items, split_items
from paser.recovery.models import ModelLoadError
from paser.recovery.zero_shot import ZERO_SHOT_TASKS

pytestmark = pytest.mark.usefixtures("single_torch_thread")

WORDS = ["the", "a", "of", "to", "and", "in", "is", "kalo", "miner", "tashi", "poven", "dar", "elos", "quix", "beltor"]


def _text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def two_window_text(tiny_tokenizer) -> tuple[str, int]:
    """A text and a seqlen that cut it into exactly two windows (plus at most one dropped token)."""
    text = _text(60)
    return text, len(tiny_tokenizer(text).input_ids) // 2


@pytest.fixture(scope="module")
def local_data_dir(tmp_path_factory):
    """A data directory holding small synthetic WikiText-2 and PTB test files."""
    root = tmp_path_factory.mktemp("data")
    (root / "eval").mkdir()
    rows = ["", " = Title = \n", *(f" {_text(40, seed)} \n" for seed in range(30))]
    (root / "eval" / "wikitext2_raw_v1_test.jsonl").write_text(
        "".join(json.dumps({"text": row}) + "\n" for row in rows)
    )
    (root / "eval" / "ptb.test.txt").write_text("".join(f" {_text(30, seed)} \n" for seed in range(40)))
    return root


def _shared_eval_file(relative: str):
    try:
        return data_dir() / relative
    except FileNotFoundError:
        pytest.skip("shared data directory absent")


def _hand_computed_mean_nll(model, tokenizer, text: str, seqlen: int, windows: int) -> float:
    """Plain per-window forward and torch cross entropy over each window's seqlen-1 predicted tokens."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    losses = []
    with torch.no_grad():
        for index in range(windows):
            window = ids[index * seqlen : (index + 1) * seqlen]
            logits = model(window[None]).logits[0].float()
            losses.append(torch.nn.functional.cross_entropy(logits[:-1], window[1:], reduction="none"))
    return float(torch.cat(losses).mean())


def test_ppl_is_exp_of_the_hand_computed_mean_nll_over_two_windows(tiny_model, tiny_tokenizer, two_window_text):
    text, seqlen = two_window_text
    expected_nll = _hand_computed_mean_nll(tiny_model, tiny_tokenizer, text, seqlen, windows=2)

    result = perplexity(tiny_model, tiny_tokenizer, text, seqlen=seqlen)

    assert result["n_windows"] == result["windows_available"] == 2
    assert result["n_tokens"] == 2 * (seqlen - 1)
    assert result["mean_nll"] == pytest.approx(expected_nll, rel=1e-6)
    assert result["ppl"] == pytest.approx(math.exp(expected_nll), rel=1e-6)
    assert math.isfinite(result["ppl"])
    first = _hand_computed_mean_nll(tiny_model, tiny_tokenizer, text, seqlen, windows=1) * (seqlen - 1)
    assert len(result["window_nll"]) == 2 and result["window_nll"][0] == pytest.approx(first, rel=1e-6)
    assert sum(result["window_nll"]) == pytest.approx(result["mean_nll"] * result["n_tokens"], rel=1e-9)


def test_batch_size_does_not_change_the_ppl(tiny_model, tiny_tokenizer, two_window_text):
    text, seqlen = two_window_text
    one = perplexity(tiny_model, tiny_tokenizer, text, seqlen=seqlen, batch_size=1)
    two = perplexity(tiny_model, tiny_tokenizer, text, seqlen=seqlen, batch_size=2)
    assert two["ppl"] == pytest.approx(one["ppl"], rel=1e-5)


def test_chunked_log_softmax_gives_the_unchunked_nll(tiny_model, tiny_tokenizer, two_window_text, monkeypatch):
    text, seqlen = two_window_text
    whole = perplexity(tiny_model, tiny_tokenizer, text, seqlen=seqlen)
    # Three positions' worth of logits per chunk, so every window is split into many chunks.
    monkeypatch.setattr("paser.recovery.evaluate._LOGIT_CHUNK_ELEMENTS", 3 * len(tiny_tokenizer))
    chunked = perplexity(tiny_model, tiny_tokenizer, text, seqlen=seqlen)
    assert chunked["mean_nll"] == pytest.approx(whole["mean_nll"], rel=1e-6)


def test_limit_keeps_only_the_first_windows(tiny_model, tiny_tokenizer):
    text = _text(200)
    limited = perplexity(tiny_model, tiny_tokenizer, text, seqlen=16, limit=3)
    assert limited["n_windows"] == 3 and limited["windows_available"] > 3
    assert limited["n_tokens"] == 3 * 15
    expected_nll = _hand_computed_mean_nll(tiny_model, tiny_tokenizer, text, 16, windows=3)
    assert limited["mean_nll"] == pytest.approx(expected_nll, rel=1e-6)


def test_default_seqlen_is_the_models_maximum_when_below_2048(tiny_model, tiny_tokenizer):
    result = perplexity(tiny_model, tiny_tokenizer, _text(600), limit=1)
    assert result["seqlen"] == 256


def test_text_shorter_than_one_window_is_refused(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="fewer than one window of seqlen 64"):
        perplexity(tiny_model, tiny_tokenizer, "the miner", seqlen=64)


def test_seqlen_beyond_the_models_maximum_positions_is_refused(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="seqlen 512 exceeds the model's maximum positions \\(256\\)"):
        perplexity(tiny_model, tiny_tokenizer, _text(600), seqlen=512)


def test_wikitext2_text_is_the_test_rows_joined_with_blank_lines():
    _shared_eval_file("eval/wikitext2_raw_v1_test.jsonl")
    text = load_ppl_text("wikitext2")
    assert len(text) == 1_294_336
    assert text.startswith("\n\n = Robert Boulter = \n\n\n")


def test_ptb_text_is_the_stripped_sentences_joined_with_spaces():
    path = _shared_eval_file("eval/ptb.test.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    text = load_ppl_text("ptb")
    assert text.startswith("no it was n't black monday but while the new york stock exchange")
    assert len(text) == sum(len(line.strip()) for line in lines) + len(lines) - 1


def test_missing_ppl_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval/ptb.test.txt is missing"):
        load_ppl_text("ptb", data_dir=tmp_path)


def test_tasks_parse_from_a_comma_list_keeping_order_and_dropping_duplicates():
    assert parse_tasks("piqa, wikitext2,piqa") == ["piqa", "wikitext2"]
    assert parse_tasks(["ptb", "boolq"]) == ["ptb", "boolq"]


def test_all_names_every_task_ppl_first():
    assert parse_tasks("all") == list(ALL_TASKS) == [*PPL_TASKS, *ZERO_SHOT_TASKS]


def test_unknown_task_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'mmlu'; known: all, wikitext2, ptb, boolq"):
        parse_tasks("wikitext2,mmlu")
    with pytest.raises(ValueError, match=r"did you mean hellaswag\?$"):
        parse_tasks("Hellaswg")


def _record(limit=None, **accuracies):
    tasks = {"wikitext2": {"metrics": {"ppl": 12.345, "mean_nll": 2.5}}}
    for task, value in accuracies.items():
        tasks[task] = {"metrics": {"acc": value, "acc_norm": value + 0.01}}
    return {"tasks": tasks, "limit": limit}


SEVEN = {task: 0.5 + index / 100 for index, task in enumerate(ZERO_SHOT_TASKS)}


def test_table_has_the_papers_columns_in_order():
    header = results_table({"dense": _record(**SEVEN)}).splitlines()[0]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns == [
        "Model",
        *("WikiText-2 PPL", "PTB PPL"),
        *("BoolQ", "PIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA"),
        "Average",
    ]


def test_table_shows_acc_for_boolq_and_winogrande_and_acc_norm_elsewhere_in_percent():
    row = results_table({"dense": _record(**SEVEN)}).splitlines()[2]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # boolq 0.50 acc, piqa 0.51+0.01, hellaswag 0.52+0.01, winogrande 0.53 acc, arc_e, arc_c, obqa acc_norm
    assert cells[1:10] == ["12.35", "–", "50.00", "52.00", "53.00", "53.00", "55.00", "56.00", "57.00"]
    assert cells[10] == f"{(50 + 52 + 53 + 53 + 55 + 56 + 57) / 7:.2f}"


def test_average_over_fewer_than_seven_tasks_is_marked_and_footnoted():
    table = results_table({"pruned": _record(limit=4, boolq=0.6, piqa=0.7)})
    cells = [cell.strip() for cell in table.splitlines()[2].strip("|").split("|")]
    assert cells[-1] == "65.50†"
    assert "† Mean of the accuracies present only (fewer than seven)" in table
    assert "pruned (4)" in table
    assert "acc_norm for PIQA, HellaSwag, ARC-e, ARC-c and OBQA; acc for BoolQ and WinoGrande" in table


def test_table_has_one_row_per_named_result():
    table = results_table({"dense": _record(**SEVEN), "wanda-50%": _record(boolq=0.4)})
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:4]] == ["dense", "wanda-50%"]


def test_run_eval_writes_metrics_json_and_markdown(tiny_model_dir, local_data_dir, tmp_path):
    record = run_eval(
        str(tiny_model_dir),
        tasks="wikitext2,ptb",
        limit=2,
        data_dir=local_data_dir,
        dtype="fp32",
        device="cpu",
        seed=3,
        out_dir=tmp_path / "eval",
    )
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(split_items(record)[0]))
    assert "items" not in written["tasks"]["wikitext2"]
    items = read_items(tmp_path / "eval")
    for task in PPL_TASKS:
        mean_nll = written["tasks"][task]["metrics"]["mean_nll"]
        assert items[f"{task}.nll_sum"].sum() / items[f"{task}.tokens"].sum() == pytest.approx(mean_nll, rel=1e-9)
        assert len(items[f"{task}.tokens"]) == 2
    assert written["limit"] == 2 and written["seed"] == 3 and written["dtype"] == "float32"
    assert {"lm_eval", "transformers", "torch"} <= set(written["versions"])
    for task in PPL_TASKS:
        assert written["tasks"][task]["n_windows"] == 2
        assert math.isfinite(written["tasks"][task]["metrics"]["ppl"])
    markdown = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| WikiText-2 PPL | PTB PPL |" in markdown.replace("  ", "")
    assert "wikitext2" in format_summary(record)


def test_missing_data_file_fails_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("paser.recovery.models.load_model", lambda *args, **kwargs: pytest.fail("model was loaded"))
    with pytest.raises(FileNotFoundError, match="eval/wikitext2_raw_v1_test.jsonl is missing"):
        run_eval(str(tiny_model_dir), tasks="wikitext2,piqa", data_dir=tmp_path)


def test_missing_zero_shot_file_fails_before_perplexity_runs(tiny_model, tiny_tokenizer, local_data_dir, monkeypatch):
    monkeypatch.setattr("paser.recovery.evaluate.perplexity", lambda *args, **kwargs: pytest.fail("perplexity ran"))
    with pytest.raises(FileNotFoundError, match="eval/piqa_valid.jsonl is missing"):
        evaluate_model(tiny_model, tiny_tokenizer, ["wikitext2", "piqa"], data_dir=local_data_dir)


def test_limit_below_one_is_refused_before_the_model_loads(tiny_model_dir, local_data_dir, monkeypatch):
    monkeypatch.setattr("paser.recovery.models.load_model", lambda *args, **kwargs: pytest.fail("model was loaded"))
    with pytest.raises(ValueError, match="limit must be a positive number of windows/examples or None, got 0"):
        run_eval(str(tiny_model_dir), tasks="wikitext2", limit=0, data_dir=local_data_dir)


def test_zero_shot_tasks_from_the_hub_need_no_local_files(local_data_dir):
    files = required_files("wikitext2,boolq", local_data_dir, source="hub")
    assert files == {"wikitext2": [local_data_dir / "eval" / "wikitext2_raw_v1_test.jsonl"], "boolq": []}


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown source 'web'; known: local, hub"):
        required_files("boolq", source="web")


def test_missing_model_path_is_refused_naming_it(local_data_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="model path does not exist"):
        run_eval(str(tmp_path / "no-model"), tasks="wikitext2", data_dir=local_data_dir)


def test_missing_adapter_folder_is_refused_naming_it(tiny_model_dir, local_data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter folder .*no-adapter"):
        run_eval(str(tiny_model_dir), adapter=tmp_path / "no-adapter", tasks="wikitext2", data_dir=local_data_dir)


def test_adapter_folder_loads_and_changes_the_ppl(tiny_model_dir, local_data_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        # LoRA starts as the identity (B = 0); random B makes the adapter visible in the ppl.
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    options = {"tasks": "wikitext2", "limit": 1, "data_dir": local_data_dir, "dtype": "fp32", "device": "cpu"}

    plain = run_eval(str(tiny_model_dir), **options)
    with_adapter = run_eval(str(tiny_model_dir), adapter=tmp_path / "adapter", **options)

    assert with_adapter["adapter"] == str(tmp_path / "adapter")
    assert with_adapter["dtype"] == "float32"
    assert with_adapter["tasks"]["wikitext2"]["metrics"]["ppl"] != pytest.approx(
        plain["tasks"]["wikitext2"]["metrics"]["ppl"], rel=1e-4
    )


def test_zero_shot_tasks_with_a_limit_give_accuracies_in_0_1(tiny_model_dir, tmp_path):
    shared = _shared_eval_file("eval/piqa_valid.jsonl").parents[1]
    record = run_eval(
        str(tiny_model_dir), tasks="piqa,boolq", limit=4, data_dir=shared, dtype="fp32", device="cpu", out_dir=tmp_path
    )
    for task in ("piqa", "boolq"):
        assert record["tasks"][task]["n"] == 4
        assert 0.0 <= record["tasks"][task]["metrics"]["acc"] <= 1.0
    assert "acc_norm for PIQA" in (tmp_path / "metrics.md").read_text()
    assert "boolq          acc " in format_summary(record)


@pytest.mark.slow
def test_smollm2_dense_is_clearly_above_chance_on_500_items():
    """The issue's sanity bar for the real model (about an hour on 2 CPU cores; minutes on a GPU)."""
    try:
        record = run_eval("smollm2", tasks=["piqa", "arc_easy", "hellaswag"], limit=500)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    tasks = record["tasks"]
    assert all(tasks[name]["n"] == 500 for name in ("piqa", "arc_easy", "hellaswag"))
    assert tasks["piqa"]["metrics"]["acc"] > 0.55
    assert tasks["arc_easy"]["metrics"]["acc"] > 0.40
    assert tasks["hellaswag"]["metrics"]["acc_norm"] > 0.30
