import bz2
import json

import pytest
import torch

from paser.data.paths import data_dir
from paser.recovery.tasks import LOCAL_TASK_PREFIX, TASKS_DIR
from paser.recovery.tasks.utils import TASK_FILES, boolq_doc, load_piqa
from paser.recovery.zero_shot import ZERO_SHOT_TASKS, run_zero_shot


@pytest.fixture(scope="module")
def shared_data():
    """The shared data directory with every zero-shot file, or a skip."""
    try:
        root = data_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    missing = [relative for files in TASK_FILES.values() for relative in files if not (root / relative).is_file()]
    if missing:
        pytest.skip(f"shared zero-shot data missing: {', '.join(missing)}")
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def local_tasks(shared_data):
    """lm-eval Task objects of our YAMLs, keyed by paper task name."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(shared_data)})
    loaded = manager.load([LOCAL_TASK_PREFIX + task for task in ZERO_SHOT_TASKS])["tasks"]
    return {task: loaded[LOCAL_TASK_PREFIX + task] for task in ZERO_SHOT_TASKS}


@pytest.fixture(scope="module")
def four_items_each(tiny_model, tiny_tokenizer, shared_data):
    return run_zero_shot(tiny_model, tiny_tokenizer, ZERO_SHOT_TASKS, limit=4, data_dir=shared_data, batch_size=4)


def scored_pairs(task, doc):
    """The (context, continuation) pairs lm-eval scores for `doc`, and the index of the gold pair."""
    context = task.fewshot_context(doc, num_fewshot=0)
    requests = task.construct_requests(doc, context, metadata=(task.config.task, 0, 1))
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    return [request.arguments for request in requests], gold


def first_jsonl_row(root, task):
    with (root / TASK_FILES[task][0]).open(encoding="utf-8") as handle:
        return json.loads(handle.readline())


def test_every_shipped_yaml_is_one_of_the_seven_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert sorted(manager.all_tasks) == sorted(LOCAL_TASK_PREFIX + task for task in ZERO_SHOT_TASKS)
    assert set(TASK_FILES) == set(ZERO_SHOT_TASKS)


@pytest.mark.parametrize("task", ZERO_SHOT_TASKS)
def test_every_task_scores_the_first_four_local_items(four_items_each, shared_data, task):
    result = four_items_each[task]
    assert result["n"] == 4
    assert 0.0 <= result["metrics"]["acc"] <= 1.0
    assert result["metrics"]["acc_stderr"] >= 0.0
    assert result["source"] == "local"
    assert result["files"] == [str(shared_data / relative) for relative in TASK_FILES[task]]
    assert result["seconds"] > 0.0


@pytest.mark.parametrize("task", ["piqa", "boolq"])
def test_every_question_keeps_its_correctness(four_items_each, task):
    result = four_items_each[task]
    assert set(result["items"]) == set(result["metrics"]) - {"acc_stderr", "acc_norm_stderr"}
    assert len(result["items"]["acc"]) == 4 and set(result["items"]["acc"]) <= {0.0, 1.0}
    assert sum(result["items"]["acc"]) / 4 == pytest.approx(result["metrics"]["acc"])


def test_acc_norm_is_reported_where_lm_eval_reports_it(four_items_each):
    without_norm = {task for task, result in four_items_each.items() if "acc_norm" not in result["metrics"]}
    assert without_norm == {"boolq", "winogrande"}


def test_piqa_asks_the_goal_and_scores_both_solutions_with_the_label_from_the_lst(local_tasks, shared_data):
    row = first_jsonl_row(shared_data, "piqa")
    label = int((shared_data / TASK_FILES["piqa"][1]).read_text().split()[0])
    pairs, gold = scored_pairs(local_tasks["piqa"], local_tasks["piqa"].eval_docs[0])
    prompt = f"Question: {row['goal']}\nAnswer:"
    assert pairs == [(prompt, " " + row["sol1"]), (prompt, " " + row["sol2"])]
    assert gold == label


def test_boolq_prompt_is_the_query_without_its_passage_prefix(local_tasks, shared_data):
    task = local_tasks["boolq"]
    with (shared_data / TASK_FILES["boolq"][0]).open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    docs = list(task.eval_docs)
    # lm-eval's template is "{passage}\nQuestion: {question}?\nAnswer:"; checked on every row without Jinja (fast),
    # then rendered by lm-eval for the first row and for the passage that itself holds "\nQuestion: ".
    for row, doc in zip(rows, docs, strict=True):
        assert f"{doc['passage']}\nQuestion: {doc['question']}?" == row["query"][len("Passage: ") :]
    tricky = next(index for index, doc in enumerate(docs) if "\nQuestion: " in doc["passage"])
    for index in (0, tricky):
        pairs, gold = scored_pairs(task, docs[index])
        prompt = rows[index]["query"][len("Passage: ") :] + "\nAnswer:"
        assert pairs == [(prompt, " no"), (prompt, " yes")]
        assert gold == rows[index]["gold"]


def test_boolq_splits_on_the_last_question_marker():
    doc = boolq_doc(
        {"query": "Passage: a\nQuestion: inside?\nb\nQuestion: is it?", "choices": ["no", "yes"], "gold": 1}, "row"
    )
    assert doc["passage"] == "a\nQuestion: inside?\nb"
    assert doc["question"] == "is it"
    assert doc["label"] == 1


def test_boolq_row_without_question_marker_is_refused_naming_the_row():
    with pytest.raises(ValueError, match="file.jsonl:7: field 'query'"):
        boolq_doc({"query": "Passage: a", "choices": ["no", "yes"], "gold": 0}, "file.jsonl:7")


def test_hellaswag_reads_six_lines_per_item_as_context_gold_and_four_endings(local_tasks, shared_data):
    with bz2.open(shared_data / TASK_FILES["hellaswag"][0], "rt", encoding="utf-8") as handle:
        context, label, *endings = [handle.readline().rstrip("\n") for _ in range(6)]
    pairs, gold = scored_pairs(local_tasks["hellaswag"], local_tasks["hellaswag"].eval_docs[0])
    assert pairs == [(context, " " + ending) for ending in endings]
    assert gold == int(label)
    assert len(local_tasks["hellaswag"].eval_docs) == 10042


def test_winogrande_scores_one_continuation_after_each_context(local_tasks, shared_data):
    row = first_jsonl_row(shared_data, "winogrande")
    pairs, gold = scored_pairs(local_tasks["winogrande"], local_tasks["winogrande"].eval_docs[0])
    assert pairs == [(context, " " + row["continuation"]) for context in row["context_options"]]
    assert gold == row["gold"]


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge"])
def test_arc_prompt_is_the_query_then_answer(local_tasks, shared_data, task):
    row = first_jsonl_row(shared_data, task)
    pairs, gold = scored_pairs(local_tasks[task], local_tasks[task].eval_docs[0])
    assert pairs == [(row["query"] + "\nAnswer:", " " + choice) for choice in row["choices"]]
    assert gold == row["gold"]


def test_openbookqa_prompt_is_the_question_stem(local_tasks, shared_data):
    row = first_jsonl_row(shared_data, "openbookqa")
    pairs, gold = scored_pairs(local_tasks["openbookqa"], local_tasks["openbookqa"].eval_docs[0])
    assert pairs == [(row["query"], " " + choice) for choice in row["choices"]]
    assert gold == row["gold"]


def test_missing_data_file_is_an_error_naming_it(tiny_model, tiny_tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="eval/piqa_valid.jsonl"):
        run_zero_shot(tiny_model, tiny_tokenizer, ["piqa"], data_dir=tmp_path)


def test_missing_piqa_labels_file_is_an_error_naming_it(tiny_model, tiny_tokenizer, tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "piqa_valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(FileNotFoundError, match="eval/piqa_valid-labels.lst"):
        run_zero_shot(tiny_model, tiny_tokenizer, ["piqa"], data_dir=tmp_path)


def test_piqa_labels_that_do_not_align_with_the_questions_are_refused(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "piqa_valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    (tmp_path / "eval" / "piqa_valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(ValueError, match="piqa_valid-labels.lst has 2 labels for 1 questions"):
        load_piqa(data_dir=str(tmp_path))


def test_unknown_task_is_refused_listing_the_known_ones(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="^unknown zero-shot task 'mmlu'; known: boolq, piqa, hellaswag"):
        run_zero_shot(tiny_model, tiny_tokenizer, ["piqa", "mmlu"])


def test_unknown_source_is_refused(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown zero-shot source 'web'; known: local, hub"):
        run_zero_shot(tiny_model, tiny_tokenizer, ["piqa"], source="web")


def test_limit_below_one_is_refused(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="limit must be a positive number of items"):
        run_zero_shot(tiny_model, tiny_tokenizer, ["piqa"], limit=0)


def test_hub_source_asks_lm_eval_for_the_stock_tasks_without_reading_local_files(
    tiny_model, tiny_tokenizer, tmp_path, monkeypatch
):
    import lm_eval
    import lm_eval.tasks

    asked = []

    def fake_simple_evaluate(**kwargs):
        (name,) = kwargs["tasks"]
        asked.append(name)
        return {"results": {name: {"acc,none": 0.5, "acc_stderr,none": "N/A"}}, "n-samples": {name: {"effective": 3}}}

    # No network here: the stock TaskManager is replaced so nothing is indexed or downloaded.
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", lambda **kwargs: None)
    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_simple_evaluate)
    results = run_zero_shot(tiny_model, tiny_tokenizer, ["arc_easy", "boolq"], source="hub", data_dir=tmp_path)
    assert asked == ["arc_easy", "boolq"]
    assert results["boolq"] == {
        "metrics": {"acc": 0.5, "acc_stderr": None},
        "n": 3,
        "source": "hub",
        "files": [],
        "seconds": results["boolq"]["seconds"],
    }


def test_a_peft_adapter_is_scored_and_the_training_mode_is_handed_back(tiny_model_dir, tiny_tokenizer, shared_data):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter.train()
    results = run_zero_shot(adapter, tiny_tokenizer, ["arc_easy"], limit=2, data_dir=shared_data)
    assert results["arc_easy"]["n"] == 2
    assert adapter.training
